"""An ExportedProgram -> the runtime's graph (docs/FORMAT.md): one node per ATen call, through the
converters of aten_ops.py; parameters and buffers under their state-dict names.

A converter is called as fn(lowering, node, *args, **kwargs) with the call's arguments as traced
(fx Nodes for tensors and symbolic sizes); it emits graph nodes through `lowering.emit` and
returns the value name that stands for the call's result (or a tuple of names).
"""
import numpy as np

from .fold import fold_constants
from .fxargs import flat, is_symbolic
from .torchlib import ExportError, import_torch

CONVERTERS = {}       # "aten.conv2d.default" (str of the fx target) -> converter


def converts(*targets):
    def deco(fn):
        for t in targets:
            CONVERTERS[t] = fn
        return fn
    return deco


def module_path(node):
    """The module a traced node came from, as its state-dict prefix ('layer3.0.conv1')."""
    stack = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()
             if not path.startswith("_empty_nn_module_stack")]     # a tracer hook's placeholder
    if not stack:
        return "<model>"
    path = stack[-1]
    return path.replace("L['self'].", "").replace("L__self__.", "") or "<model>"


class Lowering:
    def __init__(self, program, input_names):
        self.program = program
        sig = program.graph_signature
        self.param_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                         **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        self.state = {**program.state_dict, **getattr(program, "constants", {})}
        self.input_names = input_names
        self.nodes, self.tensors, self.values = [], {}, {}
        self.constants = {}            # tensor key -> value name of its `constant` node
        self.users = {}                # tensor key -> how it is used ("param" or "value")
        self.names = set()
        self.symbols = {}              # symbolic size expression -> value name
        self._current = None           # the fx node being lowered
        self.folded, values = fold_constants(program, self.param_of, self.state)
        self.folded_keys = {}          # fx name of a folded call a later call reads -> tensor key
        for node in program.graph_module.graph.nodes:
            if node.name in values:
                path = module_path(node)
                key = node.name if path == "<model>" else f"{path}.{node.name}"
                self.folded_keys[node.name] = key
                self.state[key] = values[node.name]

    # -- values -------------------------------------------------------------------------------
    def param(self, arg):
        """The state-dict key of a parameter/buffer argument, or None for a computed value."""
        if not hasattr(arg, "op"):
            return None
        key = self.folded_keys.get(arg.name)
        if key is None and arg.op == "placeholder":
            key = self.param_of.get(arg.name)
        if key is not None:
            self.tensors.setdefault(key, self.state[key])
        return key

    def value(self, arg):
        """A tensor or symbolic-size argument -> its value name (a parameter used as a value
        gets a `constant` node, once)."""
        key = self.param(arg)
        if key is not None:
            if key not in self.constants:
                self.constants[key] = self.emit("constant", [], params={"value": key},
                                                name=f"{key}.value")
            return self.constants[key]
        if not hasattr(arg, "op"):
            raise ExportError(f"expected a tensor, got {arg!r}")
        if arg.name not in self.values:
            raise ExportError(f"value {arg.name!r} is used before it is computed")
        return self.values[arg.name]

    def sizes(self, shape):
        """A shape argument or a traced shape -> (template with None where a size is symbolic,
        [value names of those sizes])."""
        template, extra = [], []
        for s in shape:
            if hasattr(s, "op"):                       # an fx Node computing a size
                template.append(None)
                extra.append(self.value(s))
            elif is_symbolic(s):                     # a SymInt of a traced shape
                template.append(None)
                extra.append(self.size_value(s))
            else:
                template.append(int(s))
        return template, extra

    def size_value(self, symint):
        """The value holding a symbolic size: a dim of a graph input that has it (sym_size)."""
        expr = str(symint.node.expr)
        if expr not in self.symbols:
            for node in self.program.graph_module.graph.nodes:
                if node.op != "placeholder" or node.name in self.param_of:
                    continue
                for dim, d in enumerate(self.meta_shape(node) or ()):
                    if is_symbolic(d) and str(d.node.expr) == expr:
                        self.symbols[expr] = self.emit("sym_size", [node.name],
                                                       attrs={"dim": dim},
                                                       name=f"{node.name}.size{dim}")
                        return self.symbols[expr]
            raise ExportError(f"the size {expr} is not a dim of an input")
        return self.symbols[expr]

    @staticmethod
    def meta_shape(arg):
        val = arg.meta.get("val") if hasattr(arg, "meta") else None
        return None if val is None or not hasattr(val, "shape") else tuple(val.shape)

    @staticmethod
    def meta_dtype(arg):
        val = arg.meta.get("val") if hasattr(arg, "meta") else None
        return getattr(val, "dtype", None)

    # -- nodes --------------------------------------------------------------------------------
    def emit(self, op, inputs, params=None, attrs=None, name=None, outputs=1):
        base = self._readable(name or op, params)
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        outs = [name] if outputs == 1 else [f"{name}:{k}" for k in range(outputs)]
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs),
                           "outputs": outs, "params": dict(params or {}),
                           "attrs": {k: v for k, v in (attrs or {}).items()
                                     if v is not None}})              # None: the op's default
        return outs[0] if outputs == 1 else tuple(outs)

    def _readable(self, name, params):
        """A node named after its module: a layer by its weight's prefix ('layer1.0.conv1'),
        another op by its module and the traced name ('layer1.0.relu_1')."""
        if self._current is None or name != self._current.name:
            return name
        weight = (params or {}).get("weight")
        if weight is not None:
            return weight[:-len(".weight")] if weight.endswith(".weight") else weight
        path = module_path(self._current)
        return name if path == "<model>" else f"{path}.{name}"

    def run(self):
        graph = self.program.graph_module.graph
        inputs, outputs = [], []
        for node in graph.nodes:
            if node.op == "placeholder":
                if node.name not in self.param_of:
                    inputs.append(node.name)
                    self.values[node.name] = node.name
            elif node.op == "call_function" and node.name not in self.folded:
                self._call(node)
            elif node.op == "output":
                outputs = [self.value(a) for a in flat(node.args[0]) if hasattr(a, "op")]
        if not outputs:
            raise ExportError("the module returns no tensor")
        self.tensors = {k: _numpy(v) for k, v in self.tensors.items()}
        return {"inputs": inputs, "outputs": outputs[:1], "nodes": self._used(outputs[:1])}

    def _call(self, node):
        target = str(node.target)
        fn = CONVERTERS.get(target)
        if fn is None:
            raise ExportError(f"{module_path(node)}: {target} is not supported")
        self._current = node
        try:
            result = fn(self, node, *node.args, **node.kwargs)
        except ExportError as e:
            raise ExportError(f"{module_path(node)}: {e}") from None
        self.values[node.name] = result

    def _used(self, outputs):
        """Only the nodes an output depends on (a traced module computes unused heads too)."""
        by_output = {v: n for n in self.nodes for v in n["outputs"]}
        need, keep = list(outputs), set()
        while need:
            n = by_output.get(need.pop())
            if n is None or n["name"] in keep:
                continue
            keep.add(n["name"])
            need.extend(n["inputs"])
        nodes = [n for n in self.nodes if n["name"] in keep]
        used = {k for n in nodes for k in n["params"].values()}
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}
        return nodes


def _numpy(t):
    """A torch tensor -> NumPy: floats as float32, integers and booleans as they are."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.float().numpy()
    return t.numpy() if t.dtype == import_torch().bool else t.numpy().astype(np.int64)
