"""What conv2d and linear share: a weight's mask, its pattern, and its execution path.

The mask comes from `<weight>.mask`, or, without one, from the zeros in the weight (paper
Algorithm 1 lines 4-9): all-zero rows of F make a group-wise layer.
"""
import numpy as np

from .. import patterns
from ..format.keys import MASK_SUFFIX
from ..paths import build_path, choose_path
from .schema import Param

# The params of a conv2d or linear node: its weight, the one tensor the runtime prunes (a
# `<weight>.mask` beside it is allowed), and an optional bias.
LAYER_PARAMS = {"weight": Param(prunable=True), "bias": Param(required=False)}


# Without a mask, a weight with fewer exact zeros than this is taken as unpruned: a trained or
# freshly initialised weight holds the odd exact 0.0, which is no pruning.
STRAY_ZERO_FRACTION = 0.01


def _mask_from_zeros(f, decl):
    """No mask tensor: all-zero rows of F are pruned groups; with another declared pattern, or
    with many zeros, every zero is pruned; a few stray zeros are no pruning at all."""
    pattern = None if decl is None else decl.get("pattern")
    rows = f.any(axis=1)
    if not rows.all() and pattern in (None, "group"):
        return np.broadcast_to(rows[:, None], f.shape)
    if pattern not in (None, "dense") or (f == 0).mean() >= STRAY_ZERO_FRACTION:
        return f != 0
    return np.ones(f.shape, dtype=bool)


class PrunableWeight:
    """A layer's F matrix (R, K), its bool mask, its pattern and its chosen path."""

    def __init__(self, node, ctx, f, to_f):
        key = node.params["weight"]
        mask = ctx.tensors.get(key + MASK_SUFFIX)
        decl = ctx.pruning.get(key)
        if mask is not None:
            fm = to_f(patterns.mask_to_bool(mask, key))
        else:
            fm = _mask_from_zeros(f, decl)
        if decl is not None:
            patterns.check_declared(fm, decl, node.name)
            self.pattern = decl["pattern"]
            self.pattern_params = {k: v for k, v in decl.items() if k != "pattern"}
        else:
            self.pattern, self.pattern_params = patterns.infer_pattern(fm)
        self.fmask = np.ascontiguousarray(fm)
        self.kept = float(fm.mean())
        self.params = int(fm.size)
        self.path_name = choose_path(ctx.path, self.pattern)

    def build(self, f, ctx):
        """f: (R, K) host float64, after any folding -> the GemmPath."""
        return build_path(self.path_name, f, self.fmask, ctx)

    def describe(self):
        return {"pattern": self.pattern,
                "pattern_params": patterns.describe({"pattern": self.pattern,
                                                     **self.pattern_params}),
                "kept": self.kept, "params": self.params, "path": self.path_name}
