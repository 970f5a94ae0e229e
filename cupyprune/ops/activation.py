"""Elementwise activations; layout-agnostic."""
import math

import numpy as np

from .epilogue import GELU_FORMS, gelu_form
from .erf import gelu as numpy_gelu
from ..layout import SAME
from .registry import Op, register, same_shape
from .schema import Choice


@register("relu")
class ReLU(Op):
    layout = SAME
    attrs, params = {}, {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return self.xp.maximum(x, 0)


@register("tanh")
class Tanh(Op):
    layout = SAME
    attrs, params = {}, {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return self.xp.tanh(x)


def _numpy_gelu(x):
    """Exact GELU on the CPU: SciPy's float32 erf where SciPy is installed (no temporaries beyond
    the output), else ops/erf.py's (float64 a block at a time)."""
    try:
        from scipy.special import erf
    except ImportError:
        return numpy_gelu(x)
    return 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2.0))).astype(x.dtype, copy=False))


@register("gelu")
class GELU(Op):
    layout = SAME
    attrs = {"approximate": Choice(*GELU_FORMS, default="none")}
    params = {}
    infer_shape = staticmethod(same_shape)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.approximate = gelu_form(node)

    def __call__(self, x):
        xp = self.xp
        if self.approximate == "tanh":
            inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1.0 + xp.tanh(inner))
        if xp.__name__ == "numpy":
            return _numpy_gelu(x)
        from cupyx.scipy.special import erf      # part of CuPy
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
