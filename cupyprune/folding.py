"""Which graph nodes fold into the conv2d/linear before them, decided once at load.

A layer's GEMM output is followed, in one fused epilogue (ops/epilogue.py), by
    y = post(act(y + bias) + residual)
so these nodes disappear from the run when the layer's output is their only input:
  batch_norm  into a conv's weights and bias (not across an activation or add already fused)
  an activation with epilogue forms (ops/activation.py: relu, gelu, tanh, sigmoid, silu,
               hardsigmoid, hardswish, ReLU6) the layer's `activation`, or its `post`
               activation once an add is fused
  add  the other operand becomes the layer's `residual`, when it is computed before the layer
       runs (ResNet's shortcut sum folds into whichever of the two branches runs last)
"""
from dataclasses import dataclass, field

@dataclass
class Folding:
    bn: dict = field(default_factory=dict)           # conv name -> batch_norm node
    activation: dict = field(default_factory=dict)   # layer name -> epilogue activation name
    residual: dict = field(default_factory=dict)     # layer name -> value added after `activation`
    post: dict = field(default_factory=dict)         # layer name -> activation after the add
    alias: dict = field(default_factory=dict)        # folded node's output -> the layer's output

    def folded_nodes(self, graph):
        """Names of the nodes that do not run on their own."""
        names = {bn.name for bn in self.bn.values()}
        return names | {n.name for n in graph.nodes if n.outputs[0] in self.alias}


def plan_folding(graph, activation_name):
    """graph -> Folding. activation_name(node) names the epilogue activation a node folds into,
    or is None for a node that is no fusable activation."""
    producers = {v: n for n in graph.nodes for v in n.outputs}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    readers = graph.consumers()
    f = Folding()

    def resolve(value):
        return f.alias.get(value, value)

    def sole_layer(value, ops=("conv2d", "linear"), epilogue=True):
        """The conv/linear whose output `value` is (through folded nodes), when `value` has one
        reader and is no graph output; else None. A grouped conv has no fused epilogue."""
        if len(readers.get(value, [])) != 1 or value in graph.outputs:
            return None
        src = producers.get(resolve(value))               # None for a graph input
        if src is None or src.op not in ops or \
                epilogue and src.attrs.get("groups", 1) != 1:
            return None
        return src

    def ready_before(value, layer):
        src = producers.get(resolve(value))
        return src is None or order[src.name] < order[layer.name]

    def fold(node, value):
        """node's output is now `value`'s (the layer's output, written by its epilogue)."""
        f.alias[node.outputs[0]] = resolve(value)

    for node in graph.nodes:
        if node.op == "batch_norm":
            src = sole_layer(node.inputs[0], ("conv2d",), epilogue=False)
            if src is not None and all(src.name not in d for d in
                                       (f.bn, f.activation, f.residual)):
                f.bn[src.name] = node
                fold(node, node.inputs[0])
        elif activation_name(node) is not None:
            src = sole_layer(node.inputs[0])
            if src is None or src.name in f.post:
                continue
            target = f.post if src.name in f.residual else f.activation
            if src.name not in target:
                target[src.name] = activation_name(node)
                fold(node, node.inputs[0])
        elif node.op == "add" and len(node.inputs) == 2:
            for mine, other in (node.inputs, node.inputs[::-1]):
                src = sole_layer(mine)
                if src is not None and src.name not in f.residual and mine != other \
                        and ready_before(other, src):
                    f.residual[src.name] = other
                    fold(node, mine)
                    break
    return f
