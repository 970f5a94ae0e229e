"""The arguments of a traced (fx) call: nested lists flattened, symbolic sizes told apart."""


def is_symbolic(s):
    """Whether s is a SymInt whose value the trace left free (a batch or sequence size)."""
    return hasattr(s, "node") and hasattr(s.node, "expr") and not s.node.expr.is_number


def flat(x):
    """The leaves of nested lists and tuples, in order."""
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from flat(y)
    else:
        yield x
