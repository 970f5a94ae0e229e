"""Load-time passes: they rewrite a load plan (plan.py) before any op is built.

compact_producers: a layer computes only the outputs that its reader keeps. When a group-wise
linear (the consumer) reads, through elementwise ops only, the output of another linear (the
producer) that nothing else reads, the features the consumer prunes are never used: the
producer keeps only those output columns of its weight and bias, and the consumer then takes
the compacted features as they come, with no gather (paper Algorithm 2 without its gather
step). A transformer FFN (dense -> GELU -> group-wise dense) and BERT's pooler (dense -> tanh
-> group-wise classifier) are the cases this was written for. Convolutions get the same: a
group-wise 1x1 conv's groups are input channels, so the conv before it (a ResNet bottleneck's
3x3, an inverted residual's projection input) computes only the channels the 1x1 conv keeps.

demote_gathering_linears (`--path auto` on the GPU): a group-wise linear that still gathers
runs dense where the gather costs more than its smaller GEMM saves.

Each pass records its decisions on the layers' PrunableWeight (ops/prunable.py): the output
columns kept, a pre-compacted input, the path, and a note for describe(). Lowering builds every
op from them. Outputs are unchanged.

Legend: R inputs of a layer, T kept inputs, K outputs.
"""
from . import paths
from .layout import SAME


def run(plan, device, path, precision):
    """Every pass that applies to a load of `path` on `device` at `precision`, in order."""
    compact_producers(plan)           # layers compute only the outputs their readers keep
    if path == "auto" and device == "gpu":
        demote_gathering_linears(plan, precision)


def _producer(step, alias, by_output, readers, outputs):
    """Walk back from a consumer through single-reader elementwise steps to a step of the
    consumer's op whose only reader is that chain, or None. (An activation fused into the layer
    is no step: its output is an alias of the layer's.)"""
    value = alias.get(step.node.inputs[0], step.node.inputs[0])
    while True:
        if value in outputs or len(readers.get(value, ())) != 1:
            return None
        src = by_output.get(value)
        if src is None:
            return None
        if src.node.op == step.node.op:
            return src
        if getattr(src.op_class, "layout", None) != SAME or len(src.node.inputs) != 1:
            return None             # elementwise ops of one input (layout.SAME) keep the features
        value = alias.get(src.node.inputs[0], src.node.inputs[0])


def _compactable(step):
    """A group-wise layer whose kept rows are whole input features (any linear, a 1x1 conv) and
    that still gathers them."""
    w = step.weight
    return w is not None and w.path_name == "group" and not w.precompacted \
        and w.shape.whole_features


def _may_compact(src, consumer):
    """A producer whose GEMM path holds one weight matrix (dense or group-wise), whose outputs
    are the consumer's inputs, and that adds no residual (the residual has all K outputs)."""
    w = src.weight
    return w.shape.gemm and w.path_name in ("dense", "group") and src.residual is None \
        and w.shape.outputs == consumer.weight.shape.inputs


def compact_producers(plan):
    """Rewrite `plan` in place: producers keep only their consumers' kept output columns."""
    alias = plan.alias
    by_output = {alias.get(v, v): s for s in plan.steps for v in s.node.outputs}
    readers = {}
    for s in plan.steps:
        for v in s.inputs:
            readers.setdefault(alias.get(v, v), []).append(s)
    outputs = {alias.get(v, v) for v in plan.graph.outputs}
    for step in plan.steps:
        if not _compactable(step):
            continue
        src = _producer(step, alias, by_output, readers, outputs)
        if src is None or not _may_compact(src, step):
            continue
        rows = step.weight.rows()
        producer = src.weight
        producer.keep_outputs = rows
        producer.notes.append(f"outputs compacted: {len(rows)}/{producer.shape.outputs} "
                              f"computed")
        step.weight.precompacted = True
        step.weight.notes.append("input pre-compacted (no gather)")


def demote_gathering_linears(plan, precision, pays=None):
    """`--path auto` on the GPU: a group-wise linear that still gathers its input after
    compact_producers runs dense where the gather costs more than the smaller GEMM saves
    (paths.GATHER_COST, a cost model of shapes alone). Outputs are unchanged: the dense weight
    is the masked one."""
    pays = pays or paths.gather_pays
    for step in plan.steps:
        w = step.weight
        if step.node.op != "linear" or w is None or w.path_name != "group" or w.precompacted:
            continue
        R, T = w.shape.inputs, len(w.rows())
        K = w.computed_widths()[1]
        if pays(R, T, K, precision):
            continue
        w.path_name = "dense"
        w.notes.append(f"auto: dense, gathering {T}/{R} inputs would cost more than it saves")
