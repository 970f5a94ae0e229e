"""Run precisions: what each one stores activations and weights as, and where it can run.

bf16 has no NumPy or CuPy dtype (CuPy 14.2), so a bf16 run keeps its values as raw bfloat16
bits in uint16 arrays: our kernels read and write them through the prelude's `bf16_t`
(gpu/cuda_source.py), cuBLAS computes on them as CUDA_R_16BF (gpu/gemm.py), and ops that do
their arithmetic with CuPy see float32 copies (engine.Bf16Boundary). No other array in the
runtime is uint16.
"""
import numpy as np

from .errors import DeviceError

BF16 = np.dtype(np.uint16)          # storage of bfloat16 values: their 16 bits, unconverted

PRECISIONS = {"fp32": np.dtype(np.float32), "tf32": np.dtype(np.float32),
              "fp16": np.dtype(np.float16), "bf16": BF16}
GPU_ONLY_PRECISIONS = ("tf32", "fp16", "bf16")

_BF16_LOWEST = -3.3895313892515355e38     # torch.finfo(torch.bfloat16).min


def is_bf16(dtype):
    return np.dtype(dtype) == BF16


def lowest(dtype):
    """The most negative finite value of a storage dtype (Hugging Face's additive mask)."""
    return _BF16_LOWEST if is_bf16(dtype) else float(np.finfo(dtype).min)


def check_precision(precision, device):
    """A DeviceError unless `precision` is known and runs on `device` ('gpu' or 'cpu')."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: choose one of "
                          f"{', '.join(PRECISIONS)}")
    if precision in GPU_ONLY_PRECISIONS and device != "gpu":
        raise DeviceError(f"precision {precision} needs the GPU (device is {device})")
