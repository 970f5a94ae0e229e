"""bf16 runs: ops that compute with CuPy arithmetic see float32 values.

A bf16 run holds its activations as bfloat16 bits in uint16 arrays (precision.py). Ops whose
GPU code is ours or cuBLAS's read and write those bits themselves (`bf16_native`: conv,
linear, layer norm, attention, max pooling, and ops that only move values). The others (a
position table's add, a batch norm that could not fold, average pooling, an activation that
could not fold into its layer) do arithmetic with CuPy, which would take the bits for
integers. They are built with float32 parameters and wrapped here: their bf16 inputs are
widened to float32 (exact) and their outputs rounded back to bf16, as PyTorch's bf16 ops
round each result. A folded CNN has one or two of them per pass, a transformer three or four.
"""
from ..bf16 import from_bits, to_bits
from ..precision import BF16


def needs_boundary(op_class, dtype):
    return dtype == BF16 and not op_class.bf16_native


class FloatBoundary:
    """An op built for float32, called on bf16 bits: widen, run, round back."""

    def __init__(self, op):
        object.__setattr__(self, "op", op)

    def __getattr__(self, name):                 # node, prunable, capturable, describe, ...
        return getattr(self.op, name)

    def __setattr__(self, name, value):          # attributes set on the wrapper are the op's
        setattr(self.op, name, value)

    def __call__(self, *args):
        outs = self.op(*(from_bits(a) if getattr(a, "dtype", None) == BF16 else a
                         for a in args))
        if isinstance(outs, tuple):
            return tuple(_round(y) for y in outs)
        return _round(outs)


def _round(y):                      # y: an array, or a traced graph's host integer (a size)
    dtype = getattr(y, "dtype", None)
    return to_bits(y) if dtype is not None and dtype.kind == "f" else y
