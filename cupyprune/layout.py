"""Where 4-D values live channels-last, decided once at load.

Inside the runtime a conv's GEMM output (N*OH*OW, K) is the next conv's input with no transpose,
so the image ops (conv, pooling, batch norm) read and write 4-D values as (N, H, W, C). Traced
graphs also hold 4-D values that are no images in that sense (ConvNeXt permutes to (N, H, W, C)
itself, attention heads are (N, heads, T, dh)); the ops that compute on them (reshape, permute,
matmul, softmax, ...) take every value in PyTorch's own order ("logical").

Each op class names its `layout`: NHWC (4-D inputs channels-last), LOGICAL (as in PyTorch), or
SAME (elementwise: computes in the layout its inputs come in). plan_layouts tags every value with
the layout its 4-D form is held in, and gives each step an `Adapter` that converts the inputs whose
tag differs from what the op wants; a model of image ops only gets none, and runs as before.
Values of fewer than four dims are always held in PyTorch's order.
"""
NHWC, LOGICAL, SAME = "nhwc", "logical", "same"


def to_logical(xp, a):
    """(N, H, W, C) -> (N, C, H, W)."""
    return a.transpose(0, 3, 1, 2)


def to_nhwc(xp, a):
    """A value in PyTorch's order -> its channels-last form; one of fewer dims is first
    broadcast-aligned to 4 (a (C, 1, 1) scale becomes (1, 1, 1, C))."""
    if a.ndim < 4:
        a = a.reshape((1,) * (4 - a.ndim) + a.shape)
    return xp.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _is_array(a):
    return hasattr(a, "ndim")


class Adapter:
    """Converts one step's inputs to the layout its op computes in."""

    def __init__(self, xp, tags, want):
        self.xp, self.tags, self.want = xp, tags, want

    def __call__(self, arrays):
        xp, want = self.xp, self.want
        if want == LOGICAL:
            return [to_logical(xp, a) if tag == NHWC and _is_array(a) and a.ndim == 4 else a
                    for a, tag in zip(arrays, self.tags)]
        rank = max((a.ndim for a in arrays if _is_array(a)), default=0)
        if rank != 4:                               # nothing 4-D: every value in torch order
            return arrays
        out = []
        for a, tag in zip(arrays, self.tags):
            if _is_array(a) and (a.ndim < 4 and a.size > 1 or a.ndim == 4 and tag != NHWC):
                a = to_nhwc(xp, a)
            out.append(a)
        return out


def plan_layouts(xp, steps, input_tags, alias):
    """steps (in order) -> ({value: tag}, [Adapter or None per step]). input_tags: the graph
    inputs' tags (images arrive channels-last)."""
    tags = dict(input_tags)
    adapters = []
    for step in steps:
        in_tags = [tags.get(alias.get(v, v), LOGICAL) for v in step.inputs]
        want = getattr(step.op, "layout", NHWC)
        if want == SAME:
            want = NHWC if NHWC in in_tags else LOGICAL
            mixed = len(set(in_tags)) > 1
            adapters.append(Adapter(xp, in_tags, NHWC) if mixed and want == NHWC else None)
        else:
            adapters.append(Adapter(xp, in_tags, want) if any(t != want for t in in_tags)
                            else None)
        for v in step.node.outputs:
            tags[v] = want
    return tags, adapters
