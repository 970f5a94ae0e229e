"""Operators: importing this package imports every module in it, and each op module registers
its classes in OPS (`@register("name")`, ops/registry.py).

Adding an operator is one module here plus its test. The module defines an Op subclass,
decorated with `@register("op_name")`, that declares on the class everything the loader asks
of it: `attrs` and `params` (ops/schema.py, checked when the graph is parsed), `layout`
(layout.py), `infer_shape` and `workspace` (the memory estimate, footprint.py), and, where it
does its own bf16 arithmetic, `bf16_native`. It is built once per node with (node, ctx), ctx a
LoadContext, and called with the node's input arrays. A prunable layer derives from
ops/prunable.PrunableOp instead and gives `weight_to_f` and `layer_shape`, so that its mask,
pattern and path are planned, and load-time passes decide for it, before it is built (plan.py,
passes.py). An activation is one entry of ops/activation.py's ACTIVATIONS instead of a module.
No list elsewhere names the ops: the graph parser, the memory estimate, the exporter's checks
and the tests read OPS.
"""
import importlib
import pkgutil

from .registry import OPS, LoadContext, Op, register

for _name in sorted(m.name for m in pkgutil.iter_modules(__path__)):     # a fixed order
    importlib.import_module(f"{__name__}.{_name}")

# the ops whose `weight` is pruned (conv2d, linear: ops/prunable.PrunableOp)
PRUNABLE_OPS = tuple(name for name, op in OPS.items() if op.prunable)

__all__ = ["OPS", "PRUNABLE_OPS", "LoadContext", "Op", "register"]
