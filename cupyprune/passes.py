"""Load-time pass: a layer computes only the outputs that its reader keeps.

When a group-wise linear (the consumer) reads, through elementwise ops only, the output of
another linear (the producer) that nothing else reads, the features the consumer prunes are
never used: the producer drops those output columns of its weight and bias at load, and the
consumer then takes the compacted features as they come, with no gather (paper Algorithm 2
without its gather step). A transformer FFN (dense -> GELU -> group-wise dense) and BERT's
pooler (dense -> tanh -> group-wise classifier) are the cases this was written for. Convolutions
get the same: a group-wise 1x1 conv's groups are input channels, so the conv before it (a
ResNet bottleneck's 3x3, an inverted residual's projection input) computes only the channels
the 1x1 conv keeps.

Legend: M rows of activations, R producer inputs, K producer outputs, T kept outputs.
"""
from .layout import SAME
from .paths import gather_pays
from .paths.base import GemmPath
from .paths.dense import DensePath
from .paths.group import GroupPath

LAYERS = ("linear", "conv2d")
NOTES = "notes"          # op attribute: the list of notes its describe() reports


class Precompacted(GemmPath):
    """A group-wise path whose input already holds only its kept features: no gather."""
    name = "group"

    def __init__(self, group):
        self.group = group                           # the GroupPath; it multiplies, never gathers
        self.rows_host = group.rows_host

    @property
    def w(self):
        return self.group.w                          # (T, K)

    @w.setter
    def w(self, value):
        self.group.w = value

    def __call__(self, x):
        return self.group(x)                         # (M, T) @ (T, K) -> (M, K)

    @property
    def nbytes(self):
        return self.group.w.nbytes


def _note(op, text):
    """Append a note to op.describe()'s 'note' field (wraps the bound method once)."""
    notes = getattr(op, NOTES, None)
    if notes is None:
        notes = []
        setattr(op, NOTES, notes)
        base = op.describe
        op.describe = lambda: {**base(), "note": "; ".join(notes)}
    notes.append(text)


def _producer(step, alias, by_output, readers, outputs):
    """Walk back from a consumer through single-reader elementwise steps to a linear step whose
    only reader is that chain, or None. (An activation fused into the linear is no step: its
    output is an alias of the linear's.)"""
    value = alias.get(step.node.inputs[0], step.node.inputs[0])
    while True:
        if value in outputs or len(readers.get(value, ())) != 1:
            return None
        src = by_output.get(value)
        if src is None:
            return None
        if src.op.op_name == step.op.op_name:
            return src
        if getattr(src.op, "layout", None) != SAME or len(src.node.inputs) != 1:
            return None             # elementwise ops of one input (layout.SAME) keep the features
        value = alias.get(src.node.inputs[0], src.node.inputs[0])


def _width(op, side):
    """A layer's input ('in') or output ('out') features: a linear's, or a conv's channels."""
    if op.op_name == "linear":
        return op.in_features if side == "in" else op.out_features
    return op.C if side == "in" else op.K


def _set_width(op, side, value):
    name = {("linear", "in"): "in_features", ("linear", "out"): "out_features",
            ("conv2d", "in"): "C", ("conv2d", "out"): "K"}[op.op_name, side]
    setattr(op, name, value)


def _compactable(step):
    """A group-wise layer whose kept rows are whole input features: any linear, a 1x1 conv."""
    op = step.op
    if op.op_name not in LAYERS or not isinstance(getattr(op, "path", None), GroupPath):
        return False
    return op.op_name == "linear" or getattr(op, "pointwise", False)


def _compact_producer(op, rows, xp):
    """Keep only output columns `rows` of a dense or group-wise linear or conv."""
    cols = xp.asarray(rows)
    op.path.w = xp.ascontiguousarray(op.path.w[:, cols])             # (R or T, K) -> (., T)
    epilogue = op.epilogue                                            # bias + fused activation
    if epilogue.bias is not None:
        epilogue.bias = xp.ascontiguousarray(epilogue.bias[cols])     # (K,) -> (T,)
    total = _width(op, "out")
    _set_width(op, "out", len(rows))
    _note(op, f"outputs compacted: {len(rows)}/{total} computed")


def compact_producers(model):
    """Apply the pass to a built Model's steps in place. Outputs are unchanged."""
    alias = model.alias
    by_output = {alias.get(v, v): s for s in model.steps for v in s.node.outputs}
    readers = {}
    for s in model.steps:
        for v in s.inputs:
            readers.setdefault(alias.get(v, v), []).append(s)
    outputs = {alias.get(v, v) for v in model.graph.outputs}
    for step in model.steps:
        op = step.op
        if not _compactable(step):
            continue
        src = _producer(step, alias, by_output, readers, outputs)
        if src is None or not isinstance(getattr(src.op, "path", None),
                                         (DensePath, GroupPath, Precompacted)) \
                or _width(src.op, "out") != _width(op, "in") or src.op.epilogue.residual:
            continue
        rows = op.path.rows_host
        _compact_producer(src.op, rows, model.xp)
        op.path = Precompacted(op.path)
        _set_width(op, "in", len(rows))
        _note(op, "input pre-compacted (no gather)")


def demote_gathering_linears(model, pays=gather_pays):
    """`--path auto` on the GPU: a group-wise linear that still gathers its input after
    compact_producers runs dense where the gather costs more than the smaller GEMM saves
    (paths.GATHER_COST). Outputs are unchanged: the dense weight is the masked one."""
    for step in model.steps:
        op = step.op
        if op.op_name != "linear" or type(op.path) is not GroupPath:
            continue
        R, (T, K) = op.in_features, op.path.w.shape
        if pays(R, T, K, model.precision):
            continue
        op.path = DensePath.from_rows(op.path.w, op.path.rows_host, R, model.xp, op.path.matmul)
        op.layer.path_name = "dense"
        _note(op, f"auto: dense, gathering {T}/{R} inputs would cost more than it saves")
