"""Ops that only move or combine values: flatten, add, dropout."""
from ..errors import InputError
from .registry import Op, elements, register, same_shape
from .schema import Float, Int


@register("flatten")
class Flatten(Op):
    """torch.flatten(x, 1) on NCHW semantics: a channels-last 4-D input is put back in (C, H, W)
    order first, so the next linear layer sees PyTorch's feature order."""
    bf16_native = True                 # only moves values
    attrs = {"start_dim": Int(default=1), "end_dim": Int(default=-1)}
    params = {}


    @staticmethod
    def attr_relations(attrs):
        if (attrs["start_dim"], attrs["end_dim"]) != (1, -1):
            return (f"attribute 'start_dim' is {attrs['start_dim']} and 'end_dim' "
                    f"{attrs['end_dim']}: only torch.flatten(x, 1), from dim 1 to the last, "
                    f"is supported")
        return None

    @staticmethod
    def infer_shape(node, params, x):
        first, last = node.attrs["start_dim"], node.attrs["end_dim"]
        first, last = first + len(x) * (first < 0), last + len(x) * (last < 0)
        if not 0 <= first <= last < len(x):
            raise InputError(f"node {node.name!r} flattens dims {node.attrs['start_dim']} to "
                             f"{node.attrs['end_dim']}, but its input has shape {tuple(x)}")
        return (*x[:first], elements(x[first:last + 1]), *x[last + 1:])

    def __call__(self, x):
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)                # (N, H, W, C) -> (N, C, H, W)
        return self.xp.ascontiguousarray(x).reshape(x.shape[0], -1)


@register("add")
class Add(Op):
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
    bf16_native = True                 # only moves values
    attrs = {"p": Float(default=0.5, min=0, max=1)}     # F.dropout's range; identity here
    params = {}
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        return x
