"""Activations: the one list, each an op of one input (layout SAME) registered from it.

ACTIVATIONS maps an op name to what it computes (`fn(xp, x, attrs)`, as torch.nn.functional
does for the same name), its attrs' schema, and the forms a conv's or linear's fused epilogue
(ops/epilogue.py) can compute it in: a CUDA expression of float v and an in-place NumPy
function per form. folding.py folds an activation that has forms into the layer before it;
the others run as their own op. The exporters (cupyprune/export/aten_ops.py,
tools/exporters/hf.py) take the names they emit from here.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from ..layout import SAME
from .erf import gelu as numpy_gelu
from .registry import Op, register, same_shape
from .schema import Choice, Float


@dataclass(frozen=True)
class Form:
    """One fused-epilogue form of an activation: y <- act(y), in place."""
    cuda: str                   # CUDA expression of float v
    numpy: object               # fn(y): y (a NumPy float array) in place


@dataclass(frozen=True)
class Activation:
    fn: object                                  # fn(xp, x, attrs) -> activation of x
    attrs: dict = field(default_factory=dict)   # name -> schema.Attr
    forms: dict = field(default_factory=dict)   # epilogue name -> Form; empty: never fused
    form_of: object = None                      # fn(attrs) -> epilogue name (one form: its)


def _numpy_erf_gelu(x):
    """Exact GELU on the CPU: SciPy's float32 erf where SciPy is installed (no temporaries beyond
    the output), else ops/erf.py's (float64 a block at a time)."""
    try:
        from scipy.special import erf
    except ImportError:
        return numpy_gelu(x)
    return 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2.0))).astype(x.dtype, copy=False))


def _gelu(xp, x, attrs):
    if attrs["approximate"] == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + xp.tanh(inner))
    if xp.__name__ == "numpy":
        return _numpy_erf_gelu(x)
    from cupyx.scipy.special import erf      # part of CuPy
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _set(fn):
    """An out-of-place NumPy function -> one that writes y in place."""
    def inplace(y):
        y[...] = fn(y)
        return y
    return inplace


def _numpy_sigmoid(y):
    """1 / (1 + exp(-y)) without the overflow warning of exp(-y) for very negative y (-> 0)."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-y))


GELU_FORMS = {"none": "gelu", "tanh": "gelu_tanh"}      # attrs.approximate -> epilogue name

ACTIVATIONS = {
    "relu": Activation(lambda xp, x, a: xp.maximum(x, 0), forms={
        "relu": Form("fmaxf(v, 0.f)", lambda y: np.maximum(y, 0, out=y))}),
    "tanh": Activation(lambda xp, x, a: xp.tanh(x), forms={
        "tanh": Form("tanhf(v)", lambda y: np.tanh(y, out=y))}),
    "gelu": Activation(
        _gelu, attrs={"approximate": Choice(*GELU_FORMS, default="none")},
        forms={"gelu": Form("0.5f * v * (1.f + erff(v * 0.70710678118654752f))",
                            _set(numpy_gelu)),
               "gelu_tanh": Form(
                   "0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)))",
                   _set(lambda y: 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) *
                                                           (y + 0.044715 * y ** 3)))))},
        form_of=lambda a: GELU_FORMS[a["approximate"]]),
    "sigmoid": Activation(lambda xp, x, a: 1 / (1 + xp.exp(-x)), forms={
        "sigmoid": Form("1.f / (1.f + expf(-v))", _set(_numpy_sigmoid))}),
    "silu": Activation(lambda xp, x, a: x / (1 + xp.exp(-x)), forms={
        "silu": Form("v / (1.f + expf(-v))", _set(lambda y: y * _numpy_sigmoid(y)))}),
    "hardsigmoid": Activation(lambda xp, x, a: xp.clip(x / 6 + 0.5, 0, 1), forms={
        "hardsigmoid": Form("fminf(fmaxf(v / 6.f + 0.5f, 0.f), 1.f)",
                            _set(lambda y: np.clip(y / 6 + 0.5, 0, 1)))}),
    "hardswish": Activation(lambda xp, x, a: x * xp.clip(x / 6 + 0.5, 0, 1), forms={
        "hardswish": Form("v * fminf(fmaxf(v / 6.f + 0.5f, 0.f), 1.f)",
                          _set(lambda y: y * np.clip(y / 6 + 0.5, 0, 1)))}),
    # ReLU6 (MobileNet) folds; other bounds run as their own op
    "hardtanh": Activation(lambda xp, x, a: xp.clip(x, a["min_val"], a["max_val"]),
                           attrs={"min_val": Float(default=-1.0), "max_val": Float(default=1.0)},
                           forms={"relu6": Form("fminf(fmaxf(v, 0.f), 6.f)",
                                                lambda y: np.clip(y, 0, 6, out=y))},
                           form_of=lambda a: "relu6" if (a["min_val"], a["max_val"]) == (0, 6)
                           else None),
    "exp": Activation(lambda xp, x, a: xp.exp(x)),
    "sqrt": Activation(lambda xp, x, a: xp.sqrt(x)),
    "rsqrt": Activation(lambda xp, x, a: 1 / xp.sqrt(x)),
    "neg": Activation(lambda xp, x, a: -x),
    "logical_not": Activation(lambda xp, x, a: xp.logical_not(x)),
}

# epilogue name -> Form, every fusable activation's ("none": the identity)
EPILOGUE_FORMS = {"none": Form("v", lambda y: y),
                  **{name: form for a in ACTIVATIONS.values() for name, form in a.forms.items()}}


def activation_name(node):
    """A node -> the name of the epilogue form it folds into (EPILOGUE_FORMS), or None for a
    node that is no fusable activation."""
    act = ACTIVATIONS.get(node.op)
    if act is None or not act.forms:
        return None
    return act.form_of(node.attrs) if act.form_of is not None else next(iter(act.forms))


class Unary(Op):
    """An activation op: its `fn` on the one input, in the layout that input comes in."""
    layout = SAME
    fn = None
    attrs, params = {}, {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return self.fn(self.xp, x, self.node.attrs)


for _name, _act in ACTIVATIONS.items():
    register(_name)(type(_name.title().replace("_", ""), (Unary,), {
        "fn": staticmethod(_act.fn), "attrs": _act.attrs}))
