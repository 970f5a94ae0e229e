"""Ops that only move or combine values: flatten, add, dropout."""
from ..errors import InputError
from ..layout import LOGICAL, SAME
from .registry import Op, elements, register, same_shape
from .schema import Float, Int


@register("flatten")
class Flatten(Op):
    """torch.flatten(x, start_dim, end_dim) on PyTorch's dim order: a channels-last 4-D input is
    put back in (C, H, W) order first (layout.py), so the next linear layer sees PyTorch's
    feature order."""
    bf16_native = True                 # only moves values
    layout = LOGICAL
    attrs = {"start_dim": Int(default=1, min=-8, max=7), "end_dim": Int(default=-1, min=-8, max=7)}
    params = {}

    @staticmethod
    def infer_shape(node, params, x):
        first, last = node.attrs["start_dim"], node.attrs["end_dim"]
        first, last = first + len(x) * (first < 0), last + len(x) * (last < 0)
        if not 0 <= first <= last < len(x):
            raise InputError(f"node {node.name!r} flattens dims {node.attrs['start_dim']} to "
                             f"{node.attrs['end_dim']}, but its input has shape {tuple(x)}")
        return (*x[:first], elements(x[first:last + 1]), *x[last + 1:])

    def __call__(self, x):
        start, end = self.node.attrs["start_dim"], self.node.attrs["end_dim"]
        if not (-x.ndim <= start < x.ndim and -x.ndim <= end < x.ndim):
            raise InputError(f"node {self.node.name!r}: cannot flatten dims {start}..{end} of a "
                             f"{x.ndim}-D value")
        start, end = start % x.ndim, end % x.ndim
        if start > end:
            raise InputError(f"node {self.node.name!r}: start_dim {start} is after end_dim {end}")
        shape = x.shape[:start] + (-1,) + x.shape[end + 1:]
        return self.xp.ascontiguousarray(x).reshape(shape)


@register("add")
class Add(Op):
    layout = SAME
    attrs, params = {}, {}

    @staticmethod
    def infer_shape(node, params, a, b):
        if tuple(a) != tuple(b):
            raise InputError(f"node {node.name!r}: cannot add shapes {tuple(a)} and {tuple(b)}")
        return a

    def __call__(self, a, b):
        if a.shape != b.shape:
            raise InputError(f"node {self.node.name!r}: cannot add shapes {a.shape} and {b.shape}")
        return a + b


@register("dropout")
class Dropout(Op):
    layout = SAME
    bf16_native = True                 # only moves values
    attrs = {"p": Float(default=0.5, min=0, max=1)}     # F.dropout's range; identity here
    params = {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return x
