"""Elementwise activations; layout-agnostic."""
import math

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
        if xp.__name__ == "numpy":               # NumPy has no erf: ops/erf.py
            return numpy_gelu(x)
        from cupyx.scipy.special import erf      # part of CuPy
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
