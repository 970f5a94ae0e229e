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

try:                # torch first, so that transformers and torchvision import beside it
    from cupyprune.export.torchlib import import_torch
    import_torch()
except ImportError:
    pass

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
    """A fresh generator per test, seeded from the OS: tests must pass on any draw. torch's
    global generator (weights drawn by torch modules) gets the same seed, so a failure is
    reproduced from the printed seed alone."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"rng seed {seed}")
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    return np.random.default_rng(seed)


def rel_err(out, ref):
    """max|out - ref| / max|ref|, both as float64 NumPy."""
    from cupyprune.backend import to_numpy
    out = to_numpy(out).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference {ref.shape}"
    assert np.isfinite(out).all(), "output holds NaN or Inf"
    return float(np.abs(out - ref).max() / np.abs(ref).max())


_STORED = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float16}


def stored(values, precision):
    """float64 host values -> (the values a kernel sees in `precision`, as float64; the CuPy
    array holding them: the cast, or bf16's bits in uint16)."""
    import cupy
    from cupyprune import bf16
    if precision == "bf16":
        bits = bf16.to_bits_host(values)
        return bf16.from_bits_host(bits).astype(np.float64), cupy.asarray(bits)
    cast = values.astype(_STORED[precision])
    return cast.astype(np.float64), cupy.asarray(cast)


def host_values(out):
    """A CuPy output -> NumPy values (uint16 arrays are bf16 bits: widened)."""
    import cupy
    from cupyprune import bf16
    out = cupy.asnumpy(out)
    return bf16.from_bits_host(out) if out.dtype == np.uint16 else out


def he_scaled(state, masks):
    """A CNN state dict (torch tensors) with every conv/linear weight rescaled so that its
    masked weight (masks: key -> 0/1 tensor) has He variance over its kept fan-in: activations
    keep their scale through 13-18 pruned layers and the logits depend on the image
    (torchvision's default init makes VGG's logits almost constant, and then a layer that
    misread its input would pass). Scaling keeps each weight's magnitude order, so masks drawn
    from `state` still hold."""
    out = dict(state)
    for k, w in state.items():
        if k.endswith(".weight") and w.ndim in (2, 4):
            kept = w * masks[k] if k in masks else w
            fan_in = w[0].numel() * (float(masks[k].mean()) if k in masks else 1.0)
            mean_square = float(kept.pow(2).sum()) / (kept.shape[0] * fan_in)
            out[k] = w * float(np.sqrt(2.0 / fan_in / mean_square))
    return out


_SPIN_SOURCE = r"""
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


def spin(cycles=200_000_000):
    """Queue one GPU thread that spins `cycles` clocks (about 0.1 s) on the current stream: work
    queued behind it on that stream waits, so a test can write an input late. Warm up (compile)
    every kernel queued behind it first: a first-use compile can outlast the spin."""
    import cupy
    cupy.RawKernel(_SPIN_SOURCE, "spin")((1,), (1,), (np.int64(cycles),))
