"""The CLI on a tiny model: infer's outputs equal torch's, inspect's table, the Python API."""
import numpy as np
import pytest
from click.testing import CliRunner

import cupyprune
from conftest import rel_err
from cupyprune.cli.main import cli
from tiny_models import torch_reference, write_tiny


@pytest.fixture
def tiny(rng, tmp_path):
    p = tmp_path / "tiny.safetensors"
    tensors = write_tiny(p, rng, labels=["ant", "bee", "cat", "dog", "eel"])
    return p, tensors


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", ["auto", "dense", "group", "csr"])
def test_infer_output_matches_torch(rng, tmp_path, tiny, path):
    p, tensors = tiny
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = invoke("infer", p, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                 "--device", "cpu", "--path", path, "--top-k", "2")
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 5) and y.dtype == np.float32
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5
    assert "latency:" in out and "top-2" in out
    names = {"ant", "bee", "cat", "dog", "eel"}
    predicted = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    assert len(predicted) == 3 and set(predicted) <= names


def test_infer_without_input_uses_sample(tiny):
    out = invoke("infer", tiny[0], "--device", "cpu", "--batch", "2")
    assert "2 deterministic synthetic inputs" in out


def test_inspect_table(tiny):
    out = invoke("inspect", tiny[0])
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("c ", "fc "))}
    assert "group" in rows["c"] and "+bn" in rows["c"]
    assert rows["fc"].split()[-1] == "dense"
    assert "prunable parameters: 376" in out


def test_inspect_forced_csr(tiny):
    out = invoke("inspect", tiny[0], "--path", "csr", "--all-ops")
    assert "max_pool2d" in out
    row = next(line for line in out.splitlines() if line.startswith("c "))
    assert row.split()[-1] == "csr"


def test_python_api(rng, tiny):
    p, tensors = tiny
    model = cupyprune.load(p, device="cpu")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 5)
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5
    assert rel_err(model(image=x), y) == 0.0


@pytest.mark.gpu
def test_python_api_gpu(rng, tiny):
    import cupy
    p, tensors = tiny
    model = cupyprune.load(p, device="gpu")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = model(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5
