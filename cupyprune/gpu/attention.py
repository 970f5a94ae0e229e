"""Multi-head self-attention on the GPU without moving q, k, v or the output between layouts.

q, k, v arrive as (N, T, D) straight from their linear layers, D = H * dh: head h of sample n is
the (T, dh) matrix at column h * dh, rows D apart. cublasGemmBatchedEx takes one pointer per
(n, h) matrix and a leading dimension of D, so the two batched GEMMs read the heads in place and the
second writes its result straight into the merged (N, T, D) layout: no split or merge copies (a pure
layout change that took a quarter of BERT's fp16 time: docs/DESIGN_NOTES.md, "Measure first: a CUPTI
kernel breakdown"). One small kernel writes the pointer arrays, so the call replays in a CUDA graph.
Between the GEMMs, one fused kernel applies the scale, the padding mask and the softmax.
At T not a multiple of 8 (ViT's 65 tokens) in fp16 and bf16, k and v are first copied per head
into (B, ld, dh) with zero rows up to ld, a multiple of 8, and the scores' rows are ld long: every
GEMM extent is then aligned to 16 bytes, and cuBLAS picks tensor-core kernels (bf16 had only a
generic MAGMA kernel for the unaligned product; docs/DESIGN_NOTES.md, "bf16 attention at odd
sequence lengths (tried, reverted)" and "Attention with padded keys (fp16, bf16)"). Up to 128 tokens
fp16 and bf16 run none of this but one fused tensor-core kernel (gpu/fused_attention.py).

Legend: N batch, T tokens, H heads, dh head size, D = H * dh, B = N * H.
"""
import numpy as np

from . import cublas
from .cuda_source import compile_kernel
from .fused_attention import applies as fused_applies
from .fused_attention import fused_self_attention
from .gemm import pointer_batched_gemm
from .rowwise import attention_softmax_

_KERNELS = {}
_POINTERS = r"""
// ptr[i*B + b] for the (n, h) = (b / H, b % H) matrix of each operand i:
// 0 q, 1 k, 2 v, 3 out: base + (n*T*D + h*dh) * itemsize; 4 scores: base + b*T*ld * itemsize;
// 5 k, 6 v copied per head with padded rows (pad_kv): base + b*ld*dh * itemsize.
extern "C" __global__ void cupyprune_attention_pointers(
        unsigned long long* ptr, unsigned long long q, unsigned long long k,
        unsigned long long v, unsigned long long out, unsigned long long scores,
        unsigned long long kp, unsigned long long vp, int B, int H, long long sample,
        long long head, long long square, long long padded) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    unsigned long long offset = (b / H) * sample + (b % H) * head;
    ptr[b] = q + offset;
    ptr[B + b] = k + offset;
    ptr[2 * B + b] = v + offset;
    ptr[3 * B + b] = out + offset;
    ptr[4 * B + b] = scores + b * square;
    ptr[5 * B + b] = kp + b * padded;
    ptr[6 * B + b] = vp + b * padded;
}
"""

# kp, vp (B, ld, dh) from k, v (N, T, D): head h of sample n (b = n*H + h) in rows t < T, zero
# rows from T to ld. A thread per 16-byte pack (dh and D multiples of the pack).
_PAD_KV = r"""
struct __align__(16) Pack { unsigned int w[4]; };
extern "C" __global__ void cupyprune_attention_pad_kv(
        const Pack* __restrict__ k, const Pack* __restrict__ v, Pack* __restrict__ kp,
        Pack* __restrict__ vp, int T, int ld, int H, int head_packs, int row_packs,
        long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int p = (int)(i % head_packs);
    const long long r = i / head_packs;
    const int t = (int)(r % ld);
    const long long b = r / ld;
    Pack a = {{0u, 0u, 0u, 0u}}, c = a;
    if (t < T) {
        const long long src = ((b / H) * T + t) * row_packs + (b % H) * head_packs + p;
        a = k[src];
        c = v[src];
    }
    kp[i] = a;
    vp[i] = c;
}
"""
LAYOUTS = ("unpadded", "padded_kv", "fused")


# the fused kernel is the default up to this many tokens (its MAX_TOKENS): measured faster at
# 33, 65 (4x) and 128 (1.9x with its keys in chunks, 1-6% slower before: docs/DESIGN_NOTES.md,
# "The fused attention at 128 tokens: keys in chunks" and the staging note after it)
FUSED_DEFAULT_TOKENS = 128


def default_layout(dtype, T):
    """For 2-byte storage: fused up to FUSED_DEFAULT_TOKENS tokens, else padded_kv (which runs
    unpadded where T is a multiple of 8); fp32 unpadded. On the H100 the ViT attention (65 tokens)
    took 0.69 ms per pass unpadded, 0.56 padded_kv, 0.17 fused in fp16 (bf16 1.17, 0.58, 0.17),
    BERT-base's (128) 0.82 unpadded and 0.44 fused (bf16 0.86, 0.44); fp32 was slower padded
    (1.01 -> 1.23 ms; docs/DESIGN_NOTES.md, "Attention with padded keys (fp16, bf16)" and the
    notes after it)."""
    if np.dtype(dtype).itemsize != 2:
        return "unpadded"
    return "fused" if T <= FUSED_DEFAULT_TOKENS else "padded_kv"


def _pointers_source():
    return "cupyprune_attention_pointers", _POINTERS


def _pad_kv_source():
    return "cupyprune_attention_pad_kv", _PAD_KV


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    yield _pointers_source()
    yield _pad_kv_source()


def self_attention(q, k, v, heads, mask=None, tf32=False, layout=None):
    """q, k, v (N, T, D) C-contiguous CuPy arrays; mask (N, T) of 0/1 or None -> (N, T, D).
    layout: one of LAYOUTS, default_layout's choice when None. fused runs as padded_kv where
    it does not apply (gpu/fused_attention.py); padded_kv runs unpadded where T is a multiple
    of the 16-byte pack, or dh or an operand's address is not aligned to it."""
    import cupy
    layout = layout or default_layout(q.dtype, q.shape[1])
    if layout == "fused":
        if fused_applies(q, k, v, heads):
            return fused_self_attention(q, k, v, heads, mask)
        layout = "padded_kv"
    N, T, D = q.shape
    H, dh = heads, D // heads
    B = N * H
    item = q.dtype.itemsize
    pack = 16 // item
    pad_kv = (layout == "padded_kv" and T % pack != 0 and dh % pack == 0
              and all(a.data.ptr % 16 == 0 for a in (k, v)))
    ld = -(-T // pack) * pack if pad_kv else T
    scores = cupy.empty((B, T, ld), dtype=q.dtype)
    out = cupy.empty_like(q)
    kp = vp = None
    if pad_kv:                                   # (B, ld, dh) each, zero rows T..ld-1
        kp, vp = (cupy.empty((B, ld, dh), dtype=q.dtype) for _ in range(2))
        total = B * ld * (dh // pack)
        compile_kernel(_KERNELS, "pad_kv", _pad_kv_source)(
            (-(-total // 256),), (256,),
            (k, v, kp, vp, np.int32(T), np.int32(ld), np.int32(H), np.int32(dh // pack),
             np.int32(D // pack), np.int64(total)))
    ptr = cupy.empty(7 * B, dtype=cupy.uint64)
    addr = lambda a: np.uint64(0 if a is None else a.data.ptr)           # noqa: E731
    compile_kernel(_KERNELS, "pointers", _pointers_source)((-(-B // 128),), (128,), (
        ptr, addr(q), addr(k), addr(v), addr(out), addr(scores), addr(kp), addr(vp),
        np.int32(B), np.int32(H), np.int64(T * D * item), np.int64(dh * item),
        np.int64(T * ld * item), np.int64(ld * dh * item)))
    p = ptr.data.ptr
    P = lambda i: p + 8 * i * B                                           # noqa: E731
    keys, values, lkv = (P(5), P(6), dh) if pad_kv else (P(1), P(2), D)  # copies or heads
    # scores_b (T, ld) = q_b k_b^T / sqrt(dh), zero in padded key columns; column-major:
    # (ld x T_q) = k_b'^T (ld x dh) q_b' (dh x T_q)
    pointer_batched_gemm(cublas.OP_T, cublas.OP_N, ld, T, dh, 1.0 / float(np.sqrt(dh)), keys,
                         lkv, P(0), D, P(4), ld, B, q.dtype, tf32)
    attention_softmax_(scores, 1.0, mask, H, length=T)       # (B, T, ld), zeros past T
    # out_b (T, dh) = probs_b v_b, written at column h*dh of (N, T, D); column-major:
    # (dh x T_q) = v_b' (dh x ld) probs_b' (ld x T_q)
    pointer_batched_gemm(cublas.OP_N, cublas.OP_N, dh, T, ld, 1.0, values, lkv, P(4), ld, P(3), D,
                         B, q.dtype, tf32)
    return out
