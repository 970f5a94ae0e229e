"""The PyTorch dtype each cupyprune precision runs beside (tf32: float32 with TF32 allowed)."""
TORCH_DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(precision):
    import torch
    return getattr(torch, TORCH_DTYPES[precision])
