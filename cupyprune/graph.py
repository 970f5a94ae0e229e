"""The model graph: parsed from the file's JSON and checked against the tensors it names."""
from dataclasses import dataclass, field

from .errors import ModelFileError
from .format import keys


@dataclass
class Node:
    name: str
    op: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)   # role ("weight") -> tensor key
    attrs: dict = field(default_factory=dict)


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


def _node(raw, i, known_ops):
    if not isinstance(raw, dict):
        raise ModelFileError(f"graph node #{i} is not a JSON object")
    for k in ("name", "op", "inputs", "outputs"):
        if k not in raw:
            raise ModelFileError(f"graph node #{i} has no {k!r}")
    if raw["op"] not in known_ops:
        raise ModelFileError(f"graph node {raw['name']!r} uses unknown op {raw['op']!r}")
    params, attrs = raw.get("params", {}), raw.get("attrs", {})
    if not isinstance(params, dict) or not isinstance(attrs, dict):
        raise ModelFileError(f"graph node {raw['name']!r}: 'params' and 'attrs' must be objects")
    if not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
               for v in (raw["inputs"], raw["outputs"])):
        raise ModelFileError(f"graph node {raw['name']!r}: 'inputs'/'outputs' must be lists of names")
    return Node(raw["name"], raw["op"], list(raw["inputs"]), list(raw["outputs"]),
                dict(params), dict(attrs))


def parse_graph(raw, known_ops):
    """JSON dict -> Graph; checks op names, unique names and that values are defined before use."""
    try:
        inputs, outputs, raw_nodes = raw["inputs"], raw["outputs"], raw["nodes"]
    except (KeyError, TypeError):
        raise ModelFileError("graph JSON must have 'inputs', 'outputs' and 'nodes'") from None
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


def check_tensors(graph, tensors):
    """Every tensor a node names is present; every tensor present is named (or a mask/sample)."""
    named = set()
    for node in graph.nodes:
        for role, key in node.params.items():
            if key not in tensors:
                raise ModelFileError(f"tensor {key!r} ({node.name}.{role}) is missing from the file")
            named.add(key)
    for key, arr in tensors.items():
        if key.startswith(keys.SAMPLE_INPUT_PREFIX) or key == keys.SAMPLE_LABELS:
            continue
        if key.endswith(keys.MASK_SUFFIX):
            param = key[: -len(keys.MASK_SUFFIX)]
            if param not in named:
                raise ModelFileError(f"mask {key!r} has no parameter {param!r} in the graph")
            if arr.dtype.kind not in "fub":
                raise ModelFileError(f"mask {key!r} has dtype {arr.dtype}: masks are float, "
                                     f"uint8 or bool 0/1")
            if tuple(arr.shape) != tuple(tensors[param].shape):
                raise ModelFileError(f"mask {key!r} has shape {tuple(arr.shape)} but "
                                     f"{param!r} has shape {tuple(tensors[param].shape)}")
            continue
        if key not in named:
            raise ModelFileError(f"tensor {key!r} is in the file but no graph node uses it")
        if arr.dtype.kind != "f":
            raise ModelFileError(f"tensor {key!r} has dtype {arr.dtype}: parameters must be "
                                 f"floating point")
