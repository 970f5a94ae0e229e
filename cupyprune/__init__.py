"""cupyprune: pruned networks that run faster, on CuPy (GPU) or NumPy (CPU).

    model = cupyprune.load("model.safetensors", device="auto")
    logits = model(x)            # x: NumPy or CuPy array, NCHW for images
"""
from .engine import Model, load
from .errors import (CupyPruneError, DeviceError, InputError, ModelFileError, OutOfMemoryError,
                     SettingError)

__version__ = "0.1.0"
__all__ = ["load", "Model", "CupyPruneError", "ModelFileError", "InputError", "DeviceError",
           "OutOfMemoryError", "SettingError", "__version__"]
