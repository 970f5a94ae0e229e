"""Shared fixtures: the gpu marker, tools/ on the path, fresh random generators."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from cupyprune.backend import gpu_available  # noqa: E402

HAS_GPU = gpu_available()


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def devices():
    """The devices a parity test runs on: cpu always, gpu where there is one (marked)."""
    return ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


@pytest.fixture
def rng():
    """A fresh generator per test, seeded from the OS: tests must pass on any draw."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


def rel_err(out, ref):
    """max|out - ref| / max|ref|, both as float64 NumPy."""
    from cupyprune.backend import to_numpy
    out = to_numpy(out).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference {ref.shape}"
    assert np.isfinite(out).all(), "output holds NaN or Inf"
    return float(np.abs(out - ref).max() / np.abs(ref).max())
