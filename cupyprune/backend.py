"""One switch between CuPy (GPU) and NumPy (CPU), chosen once when a model is loaded.

`import cupy` is never assumed to work: on a machine without CUDA the wheel may be missing, or
present without a driver. Everything else in the package receives `xp` from here.
"""
import os

import numpy as np

from .errors import DeviceError

DEVICE_ENV = "CUPYPRUNE_DEVICE"
DEVICES = ("auto", "gpu", "cpu")


def _cupy_or_none():
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # no driver, no device
        return None
    return cupy


def gpu_available():
    return _cupy_or_none() is not None


def resolve_device(device=None, default="auto"):
    """'auto' | 'gpu' | 'cpu' (or None: $CUPYPRUNE_DEVICE, else `default`) -> 'gpu' or 'cpu'."""
    device = (device or os.environ.get(DEVICE_ENV) or default).lower()
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "gpu"
    if device == "gpu":
        raise DeviceError("device 'gpu' requested but no usable CUDA GPU and CuPy were found "
                          "(install the extra: pip install 'cupyprune[cuda12]' or '[cuda13]')")
    return "cpu"


def array_module(device):
    """'gpu' -> cupy, 'cpu' -> numpy."""
    return _cupy_or_none() if device == "gpu" else np


def to_numpy(a):
    """Any array (NumPy or CuPy) -> NumPy."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return get() if get is not None else np.asarray(a)


def synchronize(xp):
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()
