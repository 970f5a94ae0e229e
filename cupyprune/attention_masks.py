"""Load-time: which traced attention masks only pad keys, and which are always true.

A traced Hugging Face encoder builds its sdpa mask inside the graph (transformers 5.x,
masking_utils.sdpa_mask without vmap): True & (q_idx >= 0) & padding[b_idx, kv_idx], the
indices aranges reshaped to (1, 1, T, 1), (N, 1, 1, 1) and (1, 1, 1, S), then expanded to
(N, 1, T, S). The `logical_and` materialises all T query rows, so the mask's strides cannot
show that every row is the same; the graph can: `q_idx >= 0` holds for an arange from 0, and
the padding lookup is constant along dims 1 and 2 because both index arrays are. A ViT's mask
is the `q_idx >= 0` term alone: always true. ops/sdpa.py hands such masks to the GPU's
self-attention as an (N, S) key-padding mask, or none at all.

The walk keeps, per value, the dims along which it is provably constant, whether it is all
true, and whether it is a non-negative integer range; any op it does not know yields nothing.

Legend: N batch, H heads, T queries, S keys.
"""
from dataclasses import dataclass

NONE, KEY_PADDING = "none", "key_padding"          # mask kinds: no mask needed, (N, S)
SDPA = "scaled_dot_product_attention"
_ELEMENTWISE = {"broadcast_add", "sub", "mul", "div", "eq", "ne", "lt", "le", "gt", "ge",
                "logical_and", "logical_or", "logical_not", "neg", "cast"}


@dataclass(frozen=True)
class Fact:
    """What is known of a value: its rank, the dims (0-based) along which it is constant,
    whether every element is true (non-zero), whether every element is a non-negative number."""
    rank: int
    const: frozenset = frozenset()
    true: bool = False
    nonneg: bool = False


def _aligned(fact, rank):
    """fact's constant dims in a broadcast to `rank` dims (missing leading dims are constant)."""
    lead = rank - fact.rank
    return set(range(lead)) | {d + lead for d in fact.const}


def _full(node, rank):
    a = node.attrs
    value = a.get("value", 0.0)
    return Fact(rank, frozenset(range(rank)), true=a.get("dtype") == "bool" and value != 0,
                nonneg=value >= 0)


def _arange(node, rank):
    a = node.attrs
    from_zero_up = 0 not in a.get("symbolic", ()) and a.get("start", 0) >= 0 \
        and a.get("step", 1) > 0
    return Fact(rank, nonneg=from_zero_up)


def _reshape(node, rank, x):
    if x.true or len(x.const) == x.rank:                # a constant value stays one
        return Fact(rank, frozenset(range(rank)), x.true, x.nonneg)
    ones = {i for i, d in enumerate(node.attrs.get("shape", ())) if d == 1}
    return Fact(rank, frozenset(ones), x.true, x.nonneg)


def _expand(node, rank, x):
    return Fact(rank, frozenset(_aligned(x, rank)), x.true, x.nonneg)


def _permute(node, rank, x):
    dims = [d % max(rank, 1) for d in node.attrs.get("dims", ())]
    return Fact(rank, frozenset(i for i, d in enumerate(dims) if d in x.const), x.true,
                x.nonneg)


def _scalar_compare(node, rank, x):
    """x >= c or x > c with c <= 0 (< 0): true for every non-negative x."""
    a = node.attrs
    c = a.get("scalar")
    holds = (x.nonneg and c is not None and not a.get("scalar_first", False)
             and (c <= 0 if node.op == "ge" else c < 0))
    return Fact(rank, frozenset(_aligned(x, rank)), true=holds)


def _elementwise(node, rank, facts):
    """f(a, b, ...) is constant along a dim where every operand is; a logical_and with an
    all-true operand is the other operand, broadcast."""
    if node.op == "logical_and":
        known = [f for f in facts if not f.true]
        if not known:
            return Fact(rank, frozenset(range(rank)), true=True)
        facts = known
    const = set(range(rank))
    for f in facts:
        const &= _aligned(f, rank)
    x = facts[0]
    scalar = node.attrs.get("scalar")
    nonneg = (node.op == "broadcast_add" and len(facts) == 1 and x.nonneg
              and scalar is not None and scalar >= 0) or (node.op == "cast" and x.nonneg)
    return Fact(rank, frozenset(const), nonneg=nonneg)


def _index(node, rank, x, indices):
    """x[i0, i1, ...] at adjacent `axes`: the index arrays' broadcast replaces those dims; a dim
    of it along which every index array is constant is constant in the result."""
    axes = node.attrs.get("axes", ())
    if not axes or list(axes) != list(range(axes[0], axes[0] + len(axes))):
        return Fact(rank)
    picked = rank - (x.rank - len(axes))
    block = set.intersection(*(_aligned(f, picked) for f in indices))
    before = {d for d in x.const if d < axes[0]}
    after = {d - axes[-1] - 1 + axes[0] + picked for d in x.const if d > axes[-1]}
    return Fact(rank, frozenset(before | {axes[0] + d for d in block} | after))


def _fact(node, ranks, facts):
    rank = ranks[node.outputs[0]]
    ins = [facts.get(v) for v in node.inputs]
    tensors = [f for f in ins if f is not None]
    op = node.op
    if op == "full":
        return _full(node, rank)
    if op == "arange":
        return _arange(node, rank)
    if not tensors or ins[0] is None:
        return Fact(rank)
    if op == "reshape":
        return _reshape(node, rank, ins[0])
    if op == "expand":
        return _expand(node, rank, ins[0])
    if op == "permute":
        return _permute(node, rank, ins[0])
    if op == "index":
        return _index(node, rank, ins[0], tensors[1:]) if len(tensors) > 1 else Fact(rank)
    if op in ("ge", "gt") and len(tensors) == 1:
        return _scalar_compare(node, rank, ins[0])
    if op in _ELEMENTWISE:
        return _elementwise(node, rank, tensors)
    return Fact(rank)


def facts_of(graph, ranks):
    """value name -> Fact for every tensor value of `graph`; ranks: value name -> rank of
    every tensor value (host sizes absent)."""
    facts = {v: Fact(ranks[v]) for v in graph.inputs if v in ranks}
    for node in graph.nodes:
        if len(node.outputs) == 1 and node.outputs[0] in ranks:
            facts[node.outputs[0]] = _fact(node, ranks, facts)
    return facts


def mask_kind(fact):
    """An sdpa mask's Fact -> NONE (always true), KEY_PADDING (constant along the heads and
    queries of its 4-D broadcast: one row of S keys per sample) or None (anything else)."""
    if fact is None:
        return None
    if fact.true:
        return NONE
    return KEY_PADDING if {1, 2} <= _aligned(fact, 4) and fact.rank <= 4 else None


def attention_mask_kinds(graph, ranks):
    """sdpa node name -> the mask_kind of its mask input, for the nodes that have one."""
    facts = facts_of(graph, ranks)
    return {n.name: mask_kind(facts.get(n.inputs[3])) for n in graph.nodes
            if n.op == SDPA and len(n.inputs) > 3}


def mark_attention_masks(plan, ranks):
    """Set `mask_kind` on the load plan's entry (plan.py) of every sdpa node whose mask the
    graph proves always true or key padding only; the op reads it when it is built. `ranks`:
    value name -> rank on the sample inputs, as the load's memory check inferred them
    (footprint.Footprint.ranks; empty where shapes are unknown)."""
    steps = [s for s in plan.steps if s.node.op == SDPA and len(s.node.inputs) > 3]
    if not steps or not ranks:
        return
    kinds = attention_mask_kinds(plan.graph, ranks)
    for step in steps:
        step.mask_kind = kinds.get(step.node.name)
