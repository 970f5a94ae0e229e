"""`cupyprune serve --workers N`: N processes on one port, each answering with its own copy of
the model (answers equal the model's own); /metrics sums every worker's counts; SIGTERM stops
them all with exit 0; a worker that cannot load the model is one `error:` line, exit 2."""
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
import cupyprune  # noqa: E402
from serve_helpers import DIGITS, ROOT, images, json_body, logits_of  # noqa: E402

TIMEOUT_S = 90
SERVE = [sys.executable, "-c", "from cupyprune.cli.main import cli; cli()", "serve"]


def _start(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(SERVE + [f"digits={DIGITS}", "--device", "cpu", "--port", "0",
                                     *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _workers_of(pid):
    """Pids of the processes `pid` spawned as server workers (multiprocessing's spawn_main)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts worker processes in /proc")
def test_workers_answer_share_metrics_and_stop_on_sigterm(rng):
    proc = _start("--workers", "2", "--max-delay-ms", "1")
    try:
        line = proc.stdout.readline()
        assert "2 workers" in line, line
        url = re.search(r"http://[0-9.]+:[0-9]+", line).group(0)
        xs = [images(rng, 1 + i % 3) for i in range(24)]
        answers = [None] * len(xs)

        def post(indices):
            for i in indices:        # a connection per request: the kernel spreads them
                answers[i] = httpx.post(url + "/v2/models/digits/infer",
                                        content=json_body(xs[i]), timeout=TIMEOUT_S)
        threads = [threading.Thread(target=post, args=(range(k, len(xs), 6),))
                   for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S)
        assert len(_workers_of(proc.pid)) == 2
        metrics = httpx.get(url + "/metrics", timeout=TIMEOUT_S).text
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    reference = cupyprune.load(DIGITS, device="cpu")
    for x, answer in zip(xs, answers):
        assert answer is not None and answer.status_code == 200, answer
        ref = reference(x)
        np.testing.assert_allclose(logits_of(answer), ref, rtol=1e-5,
                                   atol=1e-5 * np.abs(ref).max())
    # every request counted once, whichever worker answered it
    answered = re.search(r'^cupyprune_requests_total{code="200",model="digits"} ([0-9.]+)$',
                         metrics, re.M)
    assert answered is not None and float(answered.group(1)) == len(xs), metrics
    rows = re.search(r'^cupyprune_batch_size_sum{model="digits"} ([0-9.]+)$', metrics, re.M)
    assert rows is not None and float(rows.group(1)) == sum(len(x) for x in xs), metrics


def test_a_worker_that_cannot_load_is_one_line_error():
    proc = _start("--workers", "2", "--precision", "fp16")      # fp16 needs the GPU
    out, err = proc.communicate(timeout=TIMEOUT_S)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: precision fp16 needs the GPU"), err


def test_workers_with_ray_is_refused():
    proc = _start("--workers", "2", "--ray")
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2
    assert err.strip() == "error: --workers applies to the uvicorn server: with --ray, give " \
                          "--replicas"


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("cuBLAS handle"), "a server worker could not start: RuntimeError: cuBLAS handle"),
    (MemoryError("12 GB"), "a server worker ran out of memory while loading the models (12 GB): "
                           "fewer --workers, or a smaller --max-batch"),
    (type("OutOfMemoryError", (Exception,), {})("allocating 2 GB"),
     "a server worker ran out of memory while loading the models (allocating 2 GB): fewer "
     "--workers, or a smaller --max-batch"),
])
def test_a_worker_that_fails_to_load_writes_its_reason_and_is_not_restarted(
        monkeypatch, tmp_path, error, expected):
    """Whatever a worker's load raises, it writes one line for the parent and exits with
    uvicorn's start-up failure code (any other exit would make the supervisor restart it)."""
    import dataclasses
    import json

    from uvicorn.config import STARTUP_FAILURE

    from cupyprune.serve import served_model, workers
    from serve_helpers import digits_config

    def failing_load(config):
        raise error
    monkeypatch.setattr(served_model, "load_models", failing_load)
    failure = tmp_path / "failure"
    monkeypatch.setenv(workers.CONFIG_ENV, json.dumps(dataclasses.asdict(digits_config())))
    monkeypatch.setenv(workers.FAILURE_ENV, str(failure))
    with pytest.raises(SystemExit) as stopped:
        workers.app_from_environment()
    assert stopped.value.code == STARTUP_FAILURE
    assert failure.read_text() == expected + "\n"


def test_a_defective_file_is_refused_before_any_worker_starts(tmp_path):
    truncated = tmp_path / "digits.safetensors"
    with open(DIGITS, "rb") as f:
        truncated.write_bytes(f.read()[:-100])
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(SERVE + [str(truncated), "--workers", "2", "--device", "cpu",
                                   "--port", "0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 2 and done.stdout == ""          # no address: nothing served
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "truncated" in lines[0], \
        done.stderr
