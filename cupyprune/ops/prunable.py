"""What conv2d and linear share: a weight's mask, its pattern, its execution path, and what
load-time passes decided for it.

The mask comes from `<weight>.mask`, or, without one, from the zeros in the weight (paper
Algorithm 1 lines 4-9): all-zero rows of F make a group-wise layer. A layer's PrunableWeight is
planned from the file's tensors before any op is built (plan.py), so that passes (passes.py)
can decide from masks and shapes alone; the op then builds its path from it (`build`).
"""
from dataclasses import dataclass

import numpy as np

from .. import patterns
from ..format.keys import MASK_SUFFIX
from ..paths import build_path, choose_path
from ..paths.group import kept_rows
from ..paths.precompacted import Precompacted
from .registry import Op, shape_error
from .schema import Param

# The params of a conv2d or linear node: its weight, the one tensor the runtime prunes (a
# `<weight>.mask` beside it is allowed), and an optional bias.
LAYER_PARAMS = {"weight": Param(prunable=True), "bias": Param(required=False)}


# Without a mask, a weight with fewer exact zeros than this is taken as unpruned: a trained or
# freshly initialised weight holds the odd exact 0.0, which is no pruning.
STRAY_ZERO_FRACTION = 0.01


@dataclass(frozen=True)
class LayerShape:
    """A prunable layer's widths as the file defines them, and how its F rows read them."""
    inputs: int                # input features (a conv's channels)
    outputs: int               # output features (F's columns)
    whole_features: bool       # each row of F is one whole input feature (linear, 1x1 conv)
    gemm: bool = True          # it runs a GEMM path (a grouped conv runs its own loop)


def checked_weight_shape(node, shape, dims):
    """A weight's shape, of one dimension per name in `dims` and none empty, or a
    ModelFileError naming them."""
    if len(shape) != len(dims) or 0 in shape:
        shape_error(node, f"weight must be {len(dims)}-D ({', '.join(dims)}) and not empty, "
                          f"got shape {tuple(shape)}")
    return tuple(shape)


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
    """A layer's F mask (R, K), pattern and path, and the load-time passes' decisions:
    keep_outputs  the output columns the layer computes (None: all of them)
    precompacted  its input arrives holding only its kept rows, so it gathers nothing
    notes         what describe() reports of those decisions
    Zeros decide the mask, so the file's tensors are read as stored (no float64 copy)."""

    def __init__(self, node, tensors, pruning, requested_path, op_class):
        key = node.params["weight"]
        weight = tensors[key]
        self.shape = op_class.layer_shape(node, weight.shape)
        mask = tensors.get(key + MASK_SUFFIX)
        decl = pruning.get(key)
        if mask is not None:
            fm = op_class.weight_to_f(patterns.mask_to_bool(mask, key))
        else:
            fm = _mask_from_zeros(op_class.weight_to_f(weight), decl)
        if decl is not None:
            patterns.check_declared(fm, decl, node.name)
            self.pattern = decl["pattern"]
            self.pattern_params = {k: v for k, v in decl.items() if k != "pattern"}
        else:
            self.pattern, self.pattern_params = patterns.infer_pattern(fm)
        self.fmask = np.ascontiguousarray(fm)
        self.kept = float(fm.mean())
        self.params = int(fm.size)
        self.path_name = choose_path(requested_path, self.pattern) if self.shape.gemm \
            else "dense"
        self.keep_outputs = None
        self.precompacted = False
        self.notes = []
        self._rows = None

    def rows(self):
        """The kept rows of F a group-wise path multiplies by (paths/group.py), (T,); computed
        once (the mask never changes after load) and read-only, since the passes share it."""
        if self._rows is None:
            self._rows = kept_rows(self.fmask)
            self._rows.flags.writeable = False
        return self._rows

    def computed_widths(self):
        """(inputs, outputs) the layer computes: fewer than the file's where a pass compacted."""
        inputs = len(self.rows()) if self.precompacted else self.shape.inputs
        outputs = self.shape.outputs if self.keep_outputs is None else len(self.keep_outputs)
        return inputs, outputs

    def build(self, f, ctx):
        """f: (R, K) host float64, after any folding -> the GemmPath, computing only the
        planned output columns and reading a pre-compacted input where the plan says so."""
        path = build_path(self.path_name, f, self.fmask, ctx)
        if self.keep_outputs is not None:
            cols = ctx.xp.asarray(self.keep_outputs)
            path.w = ctx.xp.ascontiguousarray(path.w[:, cols])      # (R or T, K) -> (., T')
        return Precompacted(path) if self.precompacted else path

    def kept_bias(self, bias):
        """A host bias (K,) -> the planned output columns' (or None)."""
        return bias if bias is None or self.keep_outputs is None else bias[self.keep_outputs]

    def describe(self, detail):
        d = {"pattern": self.pattern,
             "pattern_params": patterns.describe({"pattern": self.pattern,
                                                  **self.pattern_params}),
             "kept": self.kept, "params": self.params, "path": self.path_name,
             "detail": detail}
        if self.notes:
            d["note"] = "; ".join(self.notes)
        return d


class PrunableOp(Op):
    """Base of conv2d and linear. Subclasses give `weight_to_f` (stored weight -> F (R, K)) and
    `layer_shape(node, weight_shape)` (a LayerShape, or a ModelFileError for a bad weight)."""
    prunable = True
    weight_to_f = None
    layer_shape = None

    @classmethod
    def plan_weight(cls, node, tensors, pruning, path):
        """The layer's PrunableWeight, from the file's tensors (plan.py)."""
        return PrunableWeight(node, tensors, pruning, path, cls)
