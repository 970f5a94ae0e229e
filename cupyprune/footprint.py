"""What a model needs in memory, from shapes alone, before anything is allocated: its weights,
and the peak of a forward pass's activations (each value lives from the step that makes it to
the last step that reads it, as the engine releases them; a step also holds its temporaries,
an im2col matrix or attention scores). Shapes are PyTorch's (images NCHW), worked out by each
op's `infer_shape`; sizes are upper bounds where a path keeps fewer values (a group-wise
layer's kept taps)."""
from dataclasses import dataclass

from .ops.registry import elements
from .ops.tensor import Size          # a host integer (a traced graph's sizes) among the shapes

# A layer is built on the host through float64 copies (its weight, its F matrix, its mask):
# at most this many bytes per element of the largest parameter are held at once.
STAGING_BYTES_PER_ELEMENT = 3 * 8


@dataclass
class Footprint:
    weights: int            # bytes of every parameter in the run's storage dtype
    activations: int        # bytes at the forward pass's peak, inputs included (0: unknown)
    staging: int            # host bytes a load holds while it converts one layer
    outputs: dict           # graph output -> its shape (empty where the inputs did not suit)
    ranks: dict             # tensor value -> its rank (empty where shapes are unknown)


def tensor_ranks(value_shapes):
    """value -> shape, from shape inference -> value -> rank of the tensor values (a traced
    graph's host integers left out)."""
    return {v: len(s) for v, s in value_shapes.items() if not isinstance(s, Size)}


def _params(node, tensors):
    return {role: tuple(tensors[key].shape) for role, key in node.params.items()}


def activation_bytes(graph, ops, tensors, input_shapes, itemsize, value_shapes=None):
    """Peak bytes of the values live at once during one pass of inputs of `input_shapes`
    (name -> shape), or None where an op of the graph has no infer_shape; `value_shapes`, a
    dict, receives every value's shape. Raises what the ops' infer_shape raise: an
    InputError for inputs the graph cannot take, a ModelFileError for a graph that cannot run
    at all."""
    if any(ops[node.op].infer_shape is None for node in graph.nodes):
        return None
    last_read = {}
    for i, node in enumerate(graph.nodes):
        for value in node.inputs:
            last_read[value] = i
    keep = set(graph.outputs)
    shapes = {name: tuple(s) for name, s in input_shapes.items()}
    live = sum(elements(s) for s in shapes.values())
    peak = live
    for i, node in enumerate(graph.nodes):
        op, params = ops[node.op], _params(node, tensors)
        inputs = [shapes[v] for v in node.inputs]
        made = op.infer_shape(node, params, *inputs)
        outs = [made] if len(node.outputs) == 1 else list(made)
        new = sum(elements(s) for s in outs)
        peak = max(peak, live + new + op.workspace(node, params, *inputs))
        live += new
        for value, shape in zip(node.outputs, outs):
            shapes[value] = shape if isinstance(shape, Size) else tuple(shape)
        for value in set(node.inputs) | set(node.outputs):     # released after this step
            if last_read.get(value, -1) <= i and value not in keep:
                live -= elements(shapes[value])
                last_read[value] = len(graph.nodes)            # released once
    if value_shapes is not None:
        value_shapes.update(shapes)
    return peak * itemsize


def weight_bytes(graph, tensors, itemsize):
    """(bytes of every named parameter at `itemsize`, elements of the largest)."""
    keys = {key for node in graph.nodes for key in node.params.values()}
    sizes = [elements(tensors[key].shape) for key in keys]
    return sum(sizes) * itemsize, max(sizes, default=0)


def footprint(graph, ops, tensors, input_shapes, itemsize, activations=True):
    """-> Footprint; `activations=False` counts the weights and staging only."""
    weights, largest = weight_bytes(graph, tensors, itemsize)
    shapes = {}
    peak = activation_bytes(graph, ops, tensors, input_shapes, itemsize, shapes) \
        if activations else None
    outputs = {name: shapes[name] for name in graph.outputs if name in shapes}
    ranks = {} if peak is None else tensor_ranks(shapes)
    return Footprint(weights, 0 if peak is None else peak, largest * STAGING_BYTES_PER_ELEMENT,
                     outputs, ranks)
