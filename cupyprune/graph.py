"""The model graph: parsed from the file's JSON and checked against the tensors it names."""
import inspect
from dataclasses import dataclass, field

from .errors import ModelFileError
from .format import keys
from .ops.schema import check_attrs, check_params


@dataclass
class Node:
    name: str
    op: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)   # role ("weight") -> tensor key
    attrs: dict = field(default_factory=dict)
    prunable: tuple = ()            # tensor keys of params that may carry a mask


@dataclass
class Graph:
    inputs: list
    outputs: list
    nodes: list

    def consumers(self):
        """value name -> list of nodes that read it."""
        out = {}
        for node in self.nodes:
            for v in node.inputs:
                out.setdefault(v, []).append(node)
        return out


def _is_names(v):
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _arity(op_class):
    """(fewest, most) values a node of this op reads; a fused residual is the engine's, not the
    node's."""
    params = [p for name, p in inspect.signature(op_class.__call__).parameters.items()
              if name not in ("self", "residual")]
    fixed = [p for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    fewest = sum(p.default is inspect.Parameter.empty for p in fixed)
    return fewest, len(fixed) if len(fixed) == len(params) else float("inf")


def _check_arity(node, op_class):
    fewest, most = _arity(op_class)
    n = len(node.inputs)
    if not fewest <= n <= most:
        want = str(fewest) if fewest == most else f"{fewest} to {most}"
        raise ModelFileError(f"graph node {node.name!r} ({node.op}) reads {n} values, "
                             f"the op takes {want}")
    if not node.outputs:
        raise ModelFileError(f"graph node {node.name!r} ({node.op}) has no outputs")


def _node(raw, i, known_ops):
    if not isinstance(raw, dict):
        raise ModelFileError(f"graph node #{i} is not a JSON object")
    for k in ("name", "op", "inputs", "outputs"):
        if k not in raw:
            raise ModelFileError(f"graph node #{i} has no {k!r}")
    for k in ("name", "op"):
        if not isinstance(raw[k], str):
            raise ModelFileError(f"graph node #{i}: {k!r} must be a string, got {raw[k]!r}")
    if raw["op"] not in known_ops:
        raise ModelFileError(f"graph node {raw['name']!r} uses unknown op {raw['op']!r}")
    params, attrs = raw.get("params", {}), raw.get("attrs", {})
    if not isinstance(params, dict) or not isinstance(attrs, dict):
        raise ModelFileError(f"graph node {raw['name']!r}: 'params' and 'attrs' must be objects")
    if not (_is_names(raw["inputs"]) and _is_names(raw["outputs"])):
        raise ModelFileError(f"graph node {raw['name']!r}: 'inputs'/'outputs' must be lists of names")
    if not all(isinstance(k, str) for k in params.values()):
        raise ModelFileError(f"graph node {raw['name']!r}: 'params' must map roles to tensor names")
    node = Node(raw["name"], raw["op"], list(raw["inputs"]), list(raw["outputs"]),
                dict(params), dict(attrs))
    _check_arity(node, known_ops[node.op])
    node.prunable = check_params(node, known_ops[node.op])
    check_attrs(node, known_ops[node.op])
    return node


def parse_graph(raw, known_ops):
    """JSON dict -> Graph; checks op names, unique names and that values are defined before use."""
    try:
        inputs, outputs, raw_nodes = raw["inputs"], raw["outputs"], raw["nodes"]
    except (KeyError, TypeError):
        raise ModelFileError("graph JSON must have 'inputs', 'outputs' and 'nodes'") from None
    for k, v in (("inputs", inputs), ("outputs", outputs)):
        if not _is_names(v) or not v:
            raise ModelFileError(f"graph {k!r} must be a non-empty list of value names, got {v!r}")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ModelFileError("graph JSON has no nodes")
    nodes = [_node(r, i, known_ops) for i, r in enumerate(raw_nodes)]
    defined, names = set(inputs), set()
    for node in nodes:
        if node.name in names:
            raise ModelFileError(f"graph node name {node.name!r} is used twice")
        names.add(node.name)
        for v in node.inputs:
            if v not in defined:
                raise ModelFileError(f"graph node {node.name!r} reads {v!r} before it is defined")
        for v in node.outputs:
            if v in defined:
                raise ModelFileError(f"graph value {v!r} is defined twice")
            defined.add(v)
    for v in outputs:
        if v not in defined:
            raise ModelFileError(f"graph output {v!r} is never computed")
    return Graph(list(inputs), list(outputs), nodes)


def check_tensors(graph, tensors, known_ops):
    """Every tensor a node names is present; every tensor present is named (or a mask/sample).
    Parameters are floating point, but for the roles an op declares `integer_params`."""
    named, prunable, integer = set(), set(), set()
    for node in graph.nodes:
        for role, key in node.params.items():
            if key not in tensors:
                raise ModelFileError(f"tensor {key!r} ({node.name!r} {role}) is missing from "
                                     f"the file")
            named.add(key)
            if role in getattr(known_ops[node.op], "integer_params", ()):
                integer.add(key)
        prunable.update(node.prunable)
    for key, arr in tensors.items():
        if key.startswith(keys.SAMPLE_INPUT_PREFIX) or key == keys.SAMPLE_LABELS:
            continue
        if key.endswith(keys.MASK_SUFFIX):
            param = key[: -len(keys.MASK_SUFFIX)]
            if param not in named:
                raise ModelFileError(f"mask {key!r} has no parameter {param!r} in the graph")
            if param not in prunable:        # the runtime multiplies only these by their mask
                raise ModelFileError(f"mask {key!r}: {param!r} is not the weight of a conv2d "
                                     f"or linear node, and only those are pruned")
            if arr.dtype.kind not in "fub":
                raise ModelFileError(f"mask {key!r} has dtype {arr.dtype}: masks are float, "
                                     f"uint8 or bool 0/1")
            if tuple(arr.shape) != tuple(tensors[param].shape):
                raise ModelFileError(f"mask {key!r} has shape {tuple(arr.shape)} but "
                                     f"{param!r} has shape {tuple(tensors[param].shape)}")
            continue
        if key not in named:
            raise ModelFileError(f"tensor {key!r} is in the file but no graph node uses it")
        if arr.dtype.kind != "f" and not (key in integer and arr.dtype.kind in "iub"):
            raise ModelFileError(f"tensor {key!r} has dtype {arr.dtype}: parameters must be "
                                 f"floating point")
