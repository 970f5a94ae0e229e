"""What follows a GEMM, fused: y = act(y + bias), in place, one pass (one kernel on the GPU).

The graph's relu/gelu/tanh node that directly follows a conv2d or linear (as its only reader) is
folded into that layer at load (engine.plan_folding), so the GEMM output is read and written once
instead of twice, and one launch disappears.
"""
import math

import numpy as np

_GPU_KERNELS = {}
_ACTIVATIONS = {
    # name -> CUDA expression of float v
    "none": "v",
    "relu": "fmaxf(v, 0.f)",
    "tanh": "tanhf(v)",
    "gelu": "0.5f * v * (1.f + erff(v * 0.70710678118654752f))",
    "gelu_tanh": "0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)))",
}


def activation_name(node):
    """An activation node -> its epilogue name."""
    if node.op == "gelu" and node.attrs.get("approximate", "none") == "tanh":
        return "gelu_tanh"
    return node.op


def _numpy_activation(name, y):
    if name == "relu":
        np.maximum(y, 0, out=y)
    elif name == "tanh":
        np.tanh(y, out=y)
    elif name in ("gelu", "gelu_tanh"):
        from scipy.special import erf
        if name == "gelu":
            y[...] = 0.5 * y * (1.0 + erf(y / math.sqrt(2.0)))
        else:
            y[...] = 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y ** 3)))
    return y


def _gpu_kernel(name, with_bias):
    key = (name, with_bias)
    if key not in _GPU_KERNELS:
        import cupy
        load = "float v = (float)y" + (" + (float)b[i % n]" if with_bias else "") + ";"
        _GPU_KERNELS[key] = cupy.ElementwiseKernel(
            "raw T b, int64 n", "T y", f"{load} y = (T)({_ACTIVATIONS[name]});",
            f"cupyprune_epilogue_{name}{'_bias' if with_bias else ''}")
    return _GPU_KERNELS[key]


class Epilogue:
    """y (M, N) -> act(y + bias) in place. bias: (N,) device array or None."""

    def __init__(self, xp, bias, activation="none"):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"no fused epilogue for activation {activation!r}")
        self.xp, self.bias, self.activation = xp, bias, activation

    @property
    def is_identity(self):
        return self.bias is None and self.activation == "none"

    def __call__(self, y):
        if self.is_identity:
            return y
        if self.xp is np:
            if self.bias is not None:
                y += self.bias
            return _numpy_activation(self.activation, y)
        b = self.bias if self.bias is not None else y
        n = self.bias.size if self.bias is not None else 1
        _gpu_kernel(self.activation, self.bias is not None)(b, np.int64(n), y)
        return y
