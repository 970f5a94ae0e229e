"""Ops that only move or combine values: flatten, add, dropout."""
from ..errors import InputError
from ..layout import SAME
from .registry import Op, register, shape_error


@register("flatten")
class Flatten(Op):
    """torch.flatten(x, 1) on NCHW semantics: a channels-last 4-D input is put back in (C, H, W)
    order first, so the next linear layer sees PyTorch's feature order."""
    bf16_native = True                 # only moves values

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        dims = (node.attrs.get("start_dim", 1), node.attrs.get("end_dim", -1))
        if dims != (1, -1):
            shape_error(node, f"flattens from dim 1 to the last (torch.flatten(x, 1)); the file "
                              f"asks start_dim {dims[0]!r}, end_dim {dims[1]!r}")

    def __call__(self, x):
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)                # (N, H, W, C) -> (N, C, H, W)
        return self.xp.ascontiguousarray(x).reshape(x.shape[0], -1)


@register("add")
class Add(Op):
    layout = SAME
    def __call__(self, a, b):
        if a.shape != b.shape:
            raise InputError(f"node {self.node.name!r}: cannot add shapes {a.shape} and {b.shape}")
        return a + b


@register("dropout")
class Dropout(Op):
    layout = SAME
    bf16_native = True                 # only moves values

    def __call__(self, x):
        return x
