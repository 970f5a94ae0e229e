"""GraphBuilder: a model file's graph and the tensors it names, built node by node.

How an exporter (cnn.py, hf.py) uses it:

    b = GraphBuilder(tensors, masks, inputs=["image"])    # {key: ndarray}, {key: bool ndarray}
    x = b.add_node("features.0", "conv2d", "image",
                   params={"weight": "features.0.weight", "bias": "features.0.bias"},
                   attrs={"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]})
    x = b.add_node("features.1", "relu", x)
    ...
    b.write(out, outputs={"logits": x}, input_spec=[...], pattern=None, exporter="...")

`add_node` returns the node's output value, which is named after the node; `outputs` gives the
graph's outputs their public names. `add_tensor` registers a tensor the exporter derives (a
split or reshaped weight). Only tensors some node names are written, each with its mask when it
has one; `unused()` lists the rest, so an exporter can check it dropped only what it meant to.
The graph and tensors are checked with the runtime's own checks before anything is written.
"""
from cupyprune.errors import ModelFileError
from cupyprune.format import write_model_file
from cupyprune.format.keys import MASK_SUFFIX, PATTERNS
from cupyprune.graph import check_tensors, parse_graph
from cupyprune.ops import OPS, PRUNABLE_OPS
from cupyprune.patterns import check_declared, weight_to_f

from .errors import ExportError

PATTERN_HELP = "dense, element, group, vector:N:M or block:RxC"


def parse_pattern(text):
    """'group' | 'element' | 'dense' | 'vector:N:M' | 'block:RxC' -> a `pruning` entry."""
    name, _, rest = text.partition(":")
    try:
        if name == "vector":
            n, m = (int(v) for v in rest.split(":"))
            return {"pattern": "vector", "n": n, "m": m}
        if name == "block":
            r, c = (int(v) for v in rest.lower().split("x"))
            return {"pattern": "block", "block": [r, c]}
    except ValueError:
        pass
    else:
        if name in PATTERNS and not rest:
            return {"pattern": name}
    raise ExportError(f"unknown pruning pattern {text!r}: use {PATTERN_HELP}")


class GraphBuilder:
    def __init__(self, tensors, masks=None, inputs=("image",)):
        self.tensors = dict(tensors)
        self.masks = dict(masks or {})
        self.inputs = list(inputs)
        self.nodes = []
        self.node_names = set()
        self.named = {}                 # tensor key -> None, in first-use order

    def add_tensor(self, key, array, mask=None):
        """Register a tensor the exporter derived; it is written only if a node names it."""
        self.tensors[key] = array
        if mask is not None:
            self.masks[key] = mask

    def add_node(self, name, op, inputs, params=None, attrs=None):
        """Append a node; inputs: a value name or a list of them. -> its output value name."""
        if name in self.node_names:
            raise ExportError(f"graph node {name!r} is added twice")
        self.node_names.add(name)
        params = dict(params or {})
        for role, key in params.items():
            if key not in self.tensors:
                raise ExportError(f"node {name!r} ({op}) needs tensor {key!r} ({role}), "
                                  f"which the checkpoint lacks")
            self.named[key] = None
        self.nodes.append({"name": name, "op": op,
                           "inputs": [inputs] if isinstance(inputs, str) else list(inputs),
                           "outputs": [name], "params": params, "attrs": dict(attrs or {})})
        return name

    def unused(self):
        """Tensor keys no node names (they are left out of the file)."""
        return [k for k in self.tensors if k not in self.named]

    def graph(self, outputs):
        """outputs: {public name: value} -> the graph dict, values renamed to their public names."""
        rename = {v: k for k, v in outputs.items()}
        for node in self.nodes:
            node["inputs"] = [rename.get(v, v) for v in node["inputs"]]
            node["outputs"] = [rename.get(v, v) for v in node["outputs"]]
        return {"inputs": self.inputs, "outputs": list(outputs), "nodes": self.nodes}

    def file_tensors(self):
        """The tensors to write: every named one, and `<key>.mask` for those with a mask."""
        out = {}
        for key in self.named:
            out[key] = self.tensors[key]
            if key in self.masks:
                out[key + MASK_SUFFIX] = self.masks[key]
        return out

    def pruning(self, pattern):
        """The `pruning` metadata: `pattern` (text, or None to leave it to the runtime's
        inference) declared for every masked prunable weight, after checking that its mask
        conforms."""
        if pattern is None:
            return {}
        decl = parse_pattern(pattern)
        out = {}
        for node in self.nodes:
            key = node["params"].get("weight")
            if node["op"] in PRUNABLE_OPS and key in self.masks:
                try:
                    check_declared(weight_to_f(self.masks[key]), decl, node["name"])
                except ModelFileError as e:
                    raise ExportError(f"--pattern {pattern}: {e}") from None
                out[key] = decl
        return out

    def write(self, path, outputs, input_spec, pattern=None, labels=None, exporter="",
              description=""):
        """Check the graph with the runtime's checks, then write the model file atomically."""
        graph = self.graph(outputs)
        tensors = self.file_tensors()
        pruning = self.pruning(pattern)
        try:
            check_tensors(parse_graph(graph, OPS), tensors, OPS)
        except ModelFileError as e:
            raise ExportError(f"the exported graph is invalid: {e}") from None
        try:
            write_model_file(path, tensors, graph, input_spec, pruning=pruning, labels=labels,
                             exporter=exporter, description=description, compact=True)
        except OSError as e:
            raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
