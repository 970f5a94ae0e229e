"""A load plan: what runs, and how, decided for every node before any op is built.

Loading goes plan -> passes -> lower. The plan (here) lists the nodes that run, in graph order,
with what folds into each (folding.py: a batch norm, activations, a residual add) and, for a
prunable layer, its PrunableWeight (ops/prunable.py: mask, pattern, path, and the decisions
load-time passes add). Passes (passes.py) read and rewrite the plan from shapes and masks
alone. Lowering (engine.py) then builds each op once from its entry, through LoadContext.
"""
from dataclasses import dataclass, field

from .folding import plan_folding


@dataclass
class LayerPlan:
    """One node that runs, and what the load decided for it."""
    node: object
    op_class: type = None     # the registered op class (ops.OPS[node.op])
    inputs: list = field(default_factory=list)   # values it is called with: node's, then residual
    bn: object = None         # the batch_norm node folded into this conv, or None
    activation: str = "none"  # epilogue activation fused after the bias
    residual: str = None      # value added after `activation` (a folded add), or None
    post: str = "none"        # activation fused after the residual add
    weight: object = None     # prunable layers: ops.prunable.PrunableWeight, else None
    ids_checked: bool = False  # an id lookup whose ids are range-checked at input binding
    mask_kind: str = None     # sdpa: what the graph proves of its mask (attention_masks.py)

    @property
    def name(self):
        return self.node.name


@dataclass
class LoadPlan:
    """The plan of a whole graph: its steps in order and the folding they came from."""
    graph: object
    steps: list               # LayerPlan per node that runs, in graph order
    folding: object           # folding.Folding
    alias: dict               # a folded node's output -> the value that holds it

    def layers(self):
        """The steps with a prunable weight."""
        return [s for s in self.steps if s.weight is not None]


def plan_load(graph, ops, tensors, pruning, path, activation_name):
    """A parsed graph -> its LoadPlan. `ops`: the op registry; `path`: the requested path
    ('auto' or a path name) that each prunable layer's weight plan resolves."""
    folding = plan_folding(graph, activation_name)
    folded = folding.folded_nodes(graph)
    steps = []
    for node in graph.nodes:
        if node.name in folded:
            continue
        op_class = ops[node.op]
        residual = folding.residual.get(node.name)
        steps.append(LayerPlan(
            node, op_class, list(node.inputs) + ([residual] if residual is not None else []),
            bn=folding.bn.get(node.name), activation=folding.activation.get(node.name, "none"),
            residual=residual, post=folding.post.get(node.name, "none"),
            weight=op_class.plan_weight(node, tensors, pruning, path) if op_class.prunable
            else None))
    return LoadPlan(graph, steps, folding, folding.alias)
