"""Multi-head self-attention on the GPU without moving q, k, v or the output between layouts.

q, k, v arrive as (N, T, D) straight from their linear layers, D = H * dh: head h of sample n is
the (T, dh) matrix at column h * dh, rows D apart. cublasGemmBatchedEx takes one pointer per
(n, h) matrix and a leading dimension of D, so the two batched GEMMs read the heads in place
and the second writes its result straight into the merged (N, T, D) layout: no split or merge
copies (a pure layout change that took a quarter of BERT's fp16 time: docs/BENCHMARKS.md's
kernel breakdown). One small kernel writes the pointer arrays, so the call replays in a CUDA
graph. Between the GEMMs, one fused kernel applies the scale, the padding mask and the softmax.

Legend: N batch, T tokens, H heads, dh head size, D = H * dh, B = N * H.
"""
import numpy as np

from . import cublas
from .cuda_source import compile_kernel
from .gemm import pointer_batched_gemm
from .rowwise import attention_softmax_

_KERNELS = {}
_POINTERS = r"""
// ptr[i*B + b] for the (n, h) = (b / H, b % H) matrix of each operand i:
// 0 q, 1 k, 2 v, 3 out: base + (n*T*D + h*dh) * itemsize; 4 scores: base + b*T*T * itemsize.
extern "C" __global__ void cupyprune_attention_pointers(
        unsigned long long* ptr, unsigned long long q, unsigned long long k,
        unsigned long long v, unsigned long long out, unsigned long long scores,
        int B, int H, long long sample, long long head, long long square) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    unsigned long long offset = (b / H) * sample + (b % H) * head;
    ptr[b] = q + offset;
    ptr[B + b] = k + offset;
    ptr[2 * B + b] = v + offset;
    ptr[3 * B + b] = out + offset;
    ptr[4 * B + b] = scores + b * square;
}
"""


def _pointers_source():
    return "cupyprune_attention_pointers", _POINTERS


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    yield _pointers_source()


def self_attention(q, k, v, heads, mask=None, tf32=False):
    """q, k, v (N, T, D) C-contiguous CuPy arrays; mask (N, T) of 0/1 or None -> (N, T, D)."""
    import cupy
    N, T, D = q.shape
    H, dh = heads, D // heads
    B = N * H
    item = q.dtype.itemsize
    scores = cupy.empty((B, T, T), dtype=q.dtype)
    out = cupy.empty_like(q)
    ptr = cupy.empty(5 * B, dtype=cupy.uint64)
    kernel = compile_kernel(_KERNELS, "pointers", _pointers_source)
    kernel((-(-B // 128),), (128,), (
        ptr, np.uint64(q.data.ptr), np.uint64(k.data.ptr), np.uint64(v.data.ptr),
        np.uint64(out.data.ptr), np.uint64(scores.data.ptr), np.int32(B), np.int32(H),
        np.int64(T * D * item), np.int64(dh * item), np.int64(T * T * item)))
    p = ptr.data.ptr
    P = lambda i: p + 8 * i * B                                           # noqa: E731
    # scores_b (T, T) = q_b k_b^T * scale; column-major: (T_k x T_q) = k_b^T' q_b'
    pointer_batched_gemm(cublas.OP_T, cublas.OP_N, T, T, dh, 1.0 / float(np.sqrt(dh)), P(1), D,
                         P(0), D, P(4), T, B, q.dtype, tf32)
    attention_softmax_(scores, 1.0, mask, H)                            # (B, T, T) in place
    # out_b (T, dh) = probs_b v_b, written at column h*dh of (N, T, D); column-major:
    # (dh x T_q) = v_b' (dh x T_k) probs_b' (T_k x T_q)
    pointer_batched_gemm(cublas.OP_N, cublas.OP_N, dh, T, T, 1.0, P(2), D, P(4), T, P(3), D, B,
                         q.dtype, tf32)
    return out
