"""A traced scaled_dot_product_attention on the GPU's self-attention (gpu/attention.py), for the
cases ops/sdpa_plan.py accepts.

q, k, v (N, H, T, dh) become the (N, T, D) arrays self_attention reads heads from: a view where
they already are one (linear -> view -> transpose), else one copy each. The (N, T, D) result is
handed back as its (N, H, T, dh) view, so the graph's transpose(1, 2) and reshape to (N, T, D)
after it are views too. A key-padding mask (N or 1, 1 or H, 1 or T, S) is read along its first
query row of its first head: (N, S) of 0/1.

Legend: N batch, H heads, T tokens, dh head size, D = H * dh, S keys (= T).
"""
from ..attention_masks import KEY_PADDING
from .attention import default_layout, self_attention
from .fused_attention import applies as fused_applies


def merged(xp, a):
    """(N, H, T, dh) -> (N, T, D): a view of a's memory when it holds that layout."""
    N, H, T, dh = a.shape
    return xp.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(N, T, H * dh)


def key_mask(xp, mask, N, T):
    """A boolean mask broadcastable to (N, H, T, S) and constant along H and T -> (N, S) int64
    0/1, C-contiguous."""
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))    # (N or 1, ., ., S or 1)
    row = m[:, 0, 0, :]                                               # (N or 1, S or 1)
    return xp.broadcast_to(row, (N, T)).astype(xp.int64, order="C")  # (N, S)


def split(out, H):
    """(N, T, D) -> its (N, H, T, dh) view."""
    N, T, D = out.shape
    return out.reshape(N, T, H, D // H).transpose(0, 2, 1, 3)


def traced_self_attention(how, q, k, v, mask, tf32):
    """how: a FastPlan for these operands -> ((N, H, T, dh) output view, 'fused' or 'gemm')."""
    import cupy
    N, H, T, dh = q.shape
    q3, k3, v3 = (merged(cupy, a) for a in (q, k, v))                 # (N, T, D) each
    m = key_mask(cupy, mask, N, T) if how.mask == KEY_PADDING else None
    layout = default_layout(q.dtype, T)
    path = "fused" if layout == "fused" and fused_applies(q3, k3, v3, H) else "gemm"
    out = self_attention(q3, k3, v3, H, m, tf32, layout)             # (N, T, D)
    return split(out, H), path                                        # (N, H, T, dh)
