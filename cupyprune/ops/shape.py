"""Ops that only move or combine values: flatten, add, dropout."""
from ..errors import InputError
from .registry import Op, register


@register("flatten")
class Flatten(Op):
    """torch.flatten(x, 1) on NCHW semantics: a channels-last 4-D input is put back in (C, H, W)
    order first, so the next linear layer sees PyTorch's feature order."""

    def __call__(self, x):
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)                # (N, H, W, C) -> (N, C, H, W)
        return self.xp.ascontiguousarray(x).reshape(x.shape[0], -1)


@register("add")
class Add(Op):
    def __call__(self, a, b):
        if a.shape != b.shape:
            raise InputError(f"node {self.node.name!r}: cannot add shapes {a.shape} and {b.shape}")
        return a + b


@register("dropout")
class Dropout(Op):
    def __call__(self, x):
        return x
