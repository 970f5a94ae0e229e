"""Elementwise activations; layout-agnostic."""
import math

from .epilogue import GELU_FORMS, gelu_form
from .registry import Op, register, same_shape
from .schema import Choice


@register("relu")
class ReLU(Op):
    attrs, params = {}, {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return self.xp.maximum(x, 0)


@register("tanh")
class Tanh(Op):
    attrs, params = {}, {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return self.xp.tanh(x)


def _erf(xp, x):
    if hasattr(xp, "special"):                  # numpy has no erf; scipy/cupyx do
        return xp.special.erf(x)
    if xp.__name__ == "numpy":
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x)


@register("gelu")
class GELU(Op):
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
        return 0.5 * x * (1.0 + _erf(xp, x / math.sqrt(2.0)))
