"""The serving tools on the shipped model, bounded: tools/serve_load.py answers every request at
two concurrency levels and records throughput, latency and the server's batches;
tools/serve_startup.py times a start to the first answer, for cupyprune serve and for a command;
bad options are one line and exit code 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")
from serve_helpers import DIGITS, ROOT  # noqa: E402

TOOLS = os.path.join(ROOT, "tools")
TIMEOUT_S = 300


def _tool(name, *args):
    env = dict(os.environ, CUPYPRUNE_DEVICE="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)


@pytest.mark.slow
def test_serve_load_runs_bounded(tmp_path):
    out = tmp_path / "load.json"
    done = _tool("serve_load.py", DIGITS, "--concurrency", "1,4", "--requests", "40",
                 "--rows", "2", "--client-procs", "2", "--max-batch", "8", "--bench",
                 "--bench-repeat", "3", "--out", out)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    loads = [r for r in rows if r["kind"] == "load"]
    assert [r["concurrency"] for r in loads] == [1, 4]
    for row in loads:
        assert row["codes"] == {"200": 40} and row["refused_p99_ms"] is None
        assert row["requests_per_s"] > 0 and row["rows_per_s"] == 2 * row["requests_per_s"]
        assert row["workers"] == 1 and row["client"] in ("aiohttp", "httpx")
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert 2 <= row["mean_batch_rows"] <= 8          # 2-row requests, batches up to 8
    bench = [r for r in rows if r["kind"] == "bench"]
    assert len(bench) == 1 and bench[0]["batch"] == 8 and bench[0]["median_ms"] > 0
    assert bench[0]["served_rows_per_s"] == loads[-1]["rows_per_s"]


@pytest.mark.slow
def test_serve_startup_times_ours_and_a_command(tmp_path):
    out = tmp_path / "startup.json"
    done = _tool("serve_startup.py", DIGITS, "--repeat", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert rows[0]["server"] == "cupyprune serve" and rows[0]["seconds"] > 0
    command = (f"{sys.executable} -c 'from cupyprune.cli.main import cli; cli()' serve "
               f"digits={DIGITS} --device cpu --port {{port}}")
    done = _tool("serve_startup.py", DIGITS, "--model", "digits", "--command", command,
                 "--repeat", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())[-1]["median_s"] > 0


@pytest.mark.slow
def test_serve_load_measures_each_worker_count_and_request_size(tmp_path):
    out = tmp_path / "load.json"
    done = _tool("serve_load.py", DIGITS, "--concurrency", "3", "--requests", "12",
                 "--rows", "1,3", "--workers", "1,2", "--client-procs", "1", "--max-batch", "8",
                 "--out", out)
    assert done.returncode == 0, done.stderr
    loads = [r for r in json.loads(out.read_text()) if r["kind"] == "load"]
    assert [(r["workers"], r["rows"]) for r in loads] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for row in loads:
        assert row["codes"] == {"200": 12} and row["concurrency"] == 3
        assert row["rows_per_s"] == pytest.approx(row["rows"] * row["requests_per_s"])


@pytest.mark.parametrize("tool, args, message", [
    ("serve_load.py", [DIGITS, "--concurrency", "0,8"], "--concurrency"),
    ("serve_load.py", [DIGITS, "--concurrency", "a"], "--concurrency"),
    ("serve_load.py", ["missing.safetensors"], "no such file"),
    ("serve_load.py", [DIGITS, "--requests", "0"], "positive integer"),
    ("serve_load.py", [DIGITS, "--rows", "1,0"], "--rows"),
    ("serve_load.py", [DIGITS, "--workers", "two"], "--workers"),
    ("serve_startup.py", [DIGITS, "--command", "server --port 1"], "{port}"),
    ("serve_startup.py", [DIGITS, "--repeat", "x"], "positive integer"),
])
def test_bad_options(tool, args, message, tmp_path):
    done = _tool(tool, *args, "--out", tmp_path / "out.json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        done.stderr
    assert not list(tmp_path.iterdir())


def test_serve_models_builds_dense_and_pruned_once(tmp_path, rng):
    """tools/serve_models.py on a small CNN: a dense and a group-wise file, both loadable, the
    pruned one with group-wise layers and fewer bytes; a second call builds nothing."""
    pytest.importorskip("torch")
    import cupyprune
    from serve_models import make_models
    small = [("r18", "cnn", "resnet18", "cifar", 32, 10)]
    said = []
    dense, pruned = make_models(str(tmp_path), small, progress=said.append)
    assert [os.path.basename(p) for p in (dense, pruned)] == ["r18-dense.safetensors",
                                                              "r18-group50.safetensors"]
    assert len(said) == 1 and os.path.getsize(pruned) < os.path.getsize(dense)
    model = cupyprune.load(pruned, device="cpu")
    assert any(s.op.describe()["path"] == "group" for s in model.layers())
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert cupyprune.load(dense, device="cpu")(x).shape == (2, 10)
    assert make_models(str(tmp_path), small, progress=said.append) == [dense, pruned]
    assert len(said) == 1


def test_serve_load_needs_a_model(tmp_path):
    done = _tool("serve_load.py", "--out", tmp_path / "out.json")
    assert done.returncode == 2 and "give MODEL files or --make DIR" in done.stderr
