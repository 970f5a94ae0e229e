"""`cupyprune serve` from the command line: bad arguments are one line and exit 2 before any
port is taken; SIGTERM answers every request in flight, then exits 0."""
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
import cupyprune  # noqa: E402
from cupyprune.cli.main import cli  # noqa: E402
from serve_helpers import DIGITS, ROOT, images, json_body, logits_of  # noqa: E402

TIMEOUT_S = 60


def invoke(*args):
    return CliRunner().invoke(cli, ["serve", *map(str, args)])


def test_bad_arguments_are_one_line_errors(tmp_path):
    cases = [
        ((tmp_path / "missing.safetensors",), "no such file"),
        ((DIGITS, DIGITS), "two models are named 'digits_group50'"),
        ((f"a={DIGITS}", f"a={DIGITS}"), "two models are named 'a'"),
        ((f"bad name={DIGITS}",), "no such file"),
        ((DIGITS, "--max-batch", "0"), "--max-batch"),
        ((DIGITS, "--port", "70000"), "--port"),
        ((DIGITS, "--ray", "--autoscaling", "{bad"), "--autoscaling: not JSON"),
        ((DIGITS, "--ray", "--autoscaling", "[1]"), "expected a JSON object"),
        ((DIGITS, "--replicas", "2"), "--replicas applies to Ray Serve: add --ray"),
        ((DIGITS, "--replica-gpus", "0.5"), "--replica-gpus applies to Ray Serve"),
        ((DIGITS, "--ray", "--replica-gpus", "2"), "--replica-gpus"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            (args, result.output)


def test_a_taken_port_is_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = invoke(DIGITS, "--device", "cpu", "--port", port)
    assert result.exit_code == 2 and result.output.startswith(f"error: cannot listen on "
                                                              f"127.0.0.1:{port}")
    assert result.output.count("\n") == 1


def test_a_batch_limit_beyond_memory_is_refused_at_start(monkeypatch):
    from cupyprune import memory
    # enough to load the model (about 1.2 MiB), not for 4096 inputs (about 54 KiB each)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 16 << 20)
    result = invoke(DIGITS, "--device", "cpu", "--max-batch", "4096", "--port", "0")
    assert result.exit_code == 2
    assert result.output.startswith("error: --max-batch 4096: does not fit in memory")


def _metric(url, name):
    text = httpx.get(url + "/metrics", timeout=TIMEOUT_S).text
    match = re.search(rf'^{name}{{model="digits"}} ([0-9.]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_sigterm_answers_requests_in_flight_then_exits(rng):
    """Requests held in a batch (a long batching delay) when SIGTERM comes are all answered."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cupyprune.cli.main import cli; cli()", "serve",
         f"digits={DIGITS}", "--device", "cpu", "--port", "0", "--max-delay-ms", "3000",
         "--max-batch", "64"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://[0-9.]+:[0-9]+", line).group(0)
        xs = [images(rng, 2) for _ in range(6)]
        answers = [None] * len(xs)

        def post(i):
            answers[i] = httpx.post(url + "/v2/models/digits/infer", content=json_body(xs[i]),
                                    timeout=TIMEOUT_S)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + TIMEOUT_S
        while _metric(url, "cupyprune_requests_in_flight") < len(xs):
            assert time.monotonic() < deadline, "the requests never arrived"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(TIMEOUT_S)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped (SIGTERM)" in out and "Traceback" not in err
    reference = cupyprune.load(DIGITS, device="cpu")
    for x, answer in zip(xs, answers):
        assert answer is not None and answer.status_code == 200
        ref = reference(x)
        np.testing.assert_allclose(logits_of(answer), ref, rtol=1e-5,
                                   atol=1e-5 * np.abs(ref).max())


def _readme_serve_blocks():
    """The bash and python blocks of the README's "Serve" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Serve\n"):text.index("## Development")]
    return (re.search(r"```bash\n(.*?)```", section, re.S).group(1),
            re.search(r"```python\n(.*?)```", section, re.S).group(1))


def test_readme_serve_section_runs_as_written():
    """The README's curl call and tritonclient snippet, pointed at a server on a free port."""
    from serve_helpers import serving
    from cupyprune.serve import ServeConfig
    bash, python = _readme_serve_blocks()
    assert "cupyprune serve weights/digits_group50.safetensors" in bash
    curl = bash[bash.index("curl"):]
    config = ServeConfig(models={"digits_group50": DIGITS}, device="cpu")
    with serving(config) as (url, _):
        host = url.removeprefix("http://")
        done = subprocess.run(["bash", "-c", curl.replace("localhost:8000", host)],
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
        ref = cupyprune.load(DIGITS, device="cpu")(x)
        out = np.asarray(json.loads(done.stdout)["outputs"][0]["data"],
                         np.float32).reshape(ref.shape)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        if importlib.util.find_spec("tritonclient") is not None:
            namespace = {}
            exec(python.replace("localhost:8000", host), namespace)
            assert namespace["logits"].shape == (4, 10)
            assert np.isfinite(namespace["logits"]).all()


@pytest.mark.parametrize("hidden, args, extra", [
    ("starlette", [], "serve"), ("prometheus_client", [], "serve"), ("ray", ["--ray"], "ray")])
def test_a_missing_extra_is_named(hidden, args, extra):
    """Without the extras the command says which to install (the base install has none)."""
    code = (f"import sys; sys.modules[{hidden!r}] = None; "
            f"from cupyprune.cli.main import cli; cli()")
    done = subprocess.run([sys.executable, "-c", code, "serve", DIGITS, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: serving needs the '{extra}' extra: pip install "
                                   f"'cupyprune[{extra}]' ({hidden} is missing)")
