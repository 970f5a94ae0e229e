"""Markdown helpers shared by the benchmark reports."""


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ms(v):
    return "-" if v is None else f"{v:.3f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def verdict_at_least(value, target):
    return f"{value:.2f}x ({'met' if value >= target else 'not met'}, goal {target:.2f}x)"


def verdict_at_most(value, target):
    return f"{value:.2f}x ({'met' if value <= target else 'not met'}, goal <= {target:.2f}x)"
