"""In-place calls in a traced program, and when it must be functionalised before lowering.

The runtime's values never alias: a converter takes an in-place call (relu_, add_, sigmoid_) as
its functional form, and the readers of the call's output see the written value. That is exact
while nothing reads the written tensor any other way after the write. It stops being exact where
a value that shares the tensor's storage (the tensor itself, a view taken of it, the base it is
a view of) is read after the write, or where the in-place call has no converter. Then the
program is functionalised first (ExportedProgram.run_decompositions with no decompositions):
torch rewrites every mutation as a fresh value and regenerates the views read after it, so the
lowering sees only functional calls. A CNN whose ReLUs run in place (torchvision's) reads only
each call's output afterwards and keeps its graph as traced.
"""
import operator
import warnings


def functional(program, converters):
    """program, or its functionalised form where an in-place call has no converter or a value
    aliasing the tensor it writes is read after the write."""
    graph = program.graph_module.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        written = _written_args(node)
        if written and (str(node.target) not in converters
                        or any(_read_after(v, node, order) for v in written)):
            with warnings.catch_warnings():      # torch's own deprecations, nothing to act on
                warnings.simplefilter("ignore", FutureWarning)
                return program.run_decompositions({})
    return program


def _schema(node):
    return getattr(node.target, "_schema", None) if node.op == "call_function" else None


def _written_args(node):
    """The fx Nodes an in-place call writes ([] for any other node)."""
    schema = _schema(node)
    if schema is None or not schema.is_mutable:
        return []
    written = []
    for i, arg in enumerate(schema.arguments):
        info = arg.alias_info
        if info is None or not info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        if hasattr(value, "op"):
            written.append(value)
    return written


def _is_view(node):
    """A call whose result shares its first argument's storage without writing it (view,
    slice, transpose, expand, ...), or an item of such a call's list result."""
    if node.op == "call_function" and node.target is operator.getitem:
        return True
    schema = _schema(node)
    if schema is None or schema.is_mutable or not schema.returns:
        return False
    return schema.returns[0].alias_info is not None


def _aliases(value):
    """Every value sharing `value`'s storage through views: its bases and their views."""
    seen, todo = set(), [value]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if _is_view(v) and v.args and hasattr(v.args[0], "op"):
            todo.append(v.args[0])                      # the base it views
        todo.extend(u for u in v.users if _is_view(u))  # the views taken of it
    return seen


def _read_after(value, write, order):
    """Is a value aliasing `value` read by a call after the in-place call `write`?"""
    return any(order[user] > order[write]
               for alias in _aliases(value) for user in alias.users if user is not write)
