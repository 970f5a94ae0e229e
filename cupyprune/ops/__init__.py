"""Operators: importing this package registers them all in OPS."""
from . import activation, conv, elementwise, linear, pool, sdpa, shape, tensor, transformer  # noqa: F401  (registration)
from .registry import OPS, LoadContext, Op, register


__all__ = ["OPS", "LoadContext", "Op", "register"]
