"""Elementwise ops of traced graphs: broadcasting arithmetic (activations are in
ops/activation.py). Layout SAME: they compute in whatever layout their inputs arrive in
(layout.py aligns a lower-rank operand with a channels-last one).

A binary op reads two values, or one value and the number `scalar` (`scalar_first`: scalar op x,
as in `1 - x`). Same-shape tensor sums stay the `add` op (ops/shape.py), which folds into the
layer before it as a residual.
"""
import numpy as np

from ..errors import InputError
from ..layout import SAME
from .registry import Op, register
from .schema import Bool, Float

BINARY = {
    "broadcast_add": lambda xp, a, b: a + b,
    "sub": lambda xp, a, b: a - b,
    "mul": lambda xp, a, b: a * b,
    "div": lambda xp, a, b: a / b,
    "pow": lambda xp, a, b: a ** b,
    "eq": lambda xp, a, b: a == b,
    "ne": lambda xp, a, b: a != b,
    "lt": lambda xp, a, b: a < b,
    "le": lambda xp, a, b: a <= b,
    "gt": lambda xp, a, b: a > b,
    "ge": lambda xp, a, b: a >= b,
    "logical_and": lambda xp, a, b: xp.logical_and(a, b),
    "logical_or": lambda xp, a, b: xp.logical_or(a, b),
    "maximum": lambda xp, a, b: xp.maximum(a, b),
    "minimum": lambda xp, a, b: xp.minimum(a, b),
}


class Binary(Op):
    layout = SAME
    fn = None
    attrs = {"scalar": Float(default=None), "scalar_first": Bool(default=False)}
    params = {}

    @staticmethod
    def infer_shape(node, params, a, b=()):
        return broadcast_shape(node, a, b)

    def __call__(self, a, b=None):
        scalar = self.node.attrs["scalar"]
        if b is None:
            if scalar is None:
                raise InputError(f"node {self.node.name!r} ({self.node.op}) needs a second "
                                 f"input or a 'scalar'")
            b = _as_type(a, scalar)
            if self.node.attrs["scalar_first"]:
                a, b = b, a
        try:
            out = self.fn(self.xp, a, b)
        except ValueError:
            raise InputError(f"node {self.node.name!r} ({self.node.op}): shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None
        return out.astype(a.dtype, copy=False) if _is_float(a) and _is_float(out) else out


def broadcast_shape(node, *shapes):
    """The shape NumPy's broadcasting gives, or an InputError naming the node."""
    try:
        return tuple(np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError:
        raise InputError(f"node {node.name!r} ({node.op}): shapes "
                         f"{', '.join(str(tuple(s)) for s in shapes)} do not broadcast") from None


def _is_float(a):
    return getattr(a, "dtype", None) is not None and a.dtype.kind == "f"


def _as_type(x, scalar):
    """A scalar operand in x's dtype (so a float16 tensor times 0.5 stays float16)."""
    if x.dtype.kind == "f" or not float(scalar).is_integer():
        return x.dtype.type(scalar) if x.dtype.kind == "f" else scalar
    return int(scalar)


for _name, _fn in BINARY.items():
    register(_name)(type(_name.title().replace("_", ""), (Binary,), {"fn": staticmethod(_fn)}))
