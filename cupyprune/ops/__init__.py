"""Operators: importing this package registers them all in OPS."""
from . import activation, conv, linear, pool, shape, transformer  # noqa: F401  (registration)
from .registry import OPS, LoadContext, Op, register


__all__ = ["OPS", "LoadContext", "Op", "register"]
