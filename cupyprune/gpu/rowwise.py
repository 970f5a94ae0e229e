"""Row-wise transformer kernels, one launch each: layer norm, and the attention softmax with its
scale and padding mask. CuPy's generic ops took 8-9 launches for each (shared notes, and
docs/BENCHMARKS.md's kernel breakdown), every one a full pass over the activations.

Both compute in float whatever the storage type (as PyTorch does for half), with the row's
statistics reduced in registers and shared memory.
"""
import numpy as np

from .cuda_source import compile_kernel, storage_type

_KERNELS = {}

_LAYER_NORM = r"""
// x, y (rows, D): one block per row; mean first, then the variance of (x - mean): two reads of
// the row (the second from cache), no cancellation from E[x^2] - E[x]^2.
extern "C" __global__ void %(name)s(const %(T)s* x, const %(T)s* w, const %(T)s* b, %(T)s* y,
                                    int D, float eps) {
    __shared__ float scratch[32];
    const %(T)s* xr = x + (size_t)blockIdx.x * D;
    %(T)s* yr = y + (size_t)blockIdx.x * D;
    float s = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) s += to_f(xr[i]);
    float mean = block_sum(s, scratch) / D;
    float q = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) { float d = to_f(xr[i]) - mean; q += d * d; }
    float rstd = rsqrtf(block_sum(q, scratch) / D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        store_f(yr + i, (to_f(xr[i]) - mean) * rstd * to_f(w[i]) + to_f(b[i]));
}
"""

_SOFTMAX = r"""
// s (N*H, T, L) in place, one warp per row: softmax(s * scale + (mask[n, j] == 0 ? masked : 0))
// over j < L, with n = row / (T * H): Hugging Face's additive padding mask of the dtype's min.
extern "C" __global__ void %(name)s(%(T)s* s, const long long* mask, int has_mask, int L,
                                    int rows_per_sample, int rows, float scale, float masked) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int lane = threadIdx.x & 31;
    %(T)s* r = s + (size_t)row * L;
    const long long* m = mask + (size_t)(row / rows_per_sample) * L;
    float mx = __int_as_float(0xff800000);          // -inf
    for (int j = lane; j < L; j += 32) {
        float v = to_f(r[j]) * scale + ((has_mask && m[j] == 0) ? masked : 0.f);
        mx = fmaxf(mx, v);
    }
    mx = warp_max(mx);
    float sum = 0.f;
    for (int j = lane; j < L; j += 32) {
        float v = to_f(r[j]) * scale + ((has_mask && m[j] == 0) ? masked : 0.f);
        sum += expf(v - mx);
    }
    float inv = 1.f / warp_sum(sum);
    for (int j = lane; j < L; j += 32) {
        float v = to_f(r[j]) * scale + ((has_mask && m[j] == 0) ? masked : 0.f);
        store_f(r + j, expf(v - mx) * inv);
    }
}
"""


_SOURCES = {"layer_norm": _LAYER_NORM, "softmax": _SOFTMAX}


def _source(kind, T):
    name = f"cupyprune_{kind}_{'f32' if T == 'float' else 'f16'}"
    return name, _SOURCES[kind] % {"T": T, "name": name}


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for kind in _SOURCES:
        for T in ("float", "unsigned short"):
            yield _source(kind, T)


def _kernel(kind, dtype):
    key = (kind, storage_type(dtype))
    return compile_kernel(_KERNELS, key, lambda: _source(*key))


def layer_norm(x, weight, bias, eps):
    """x (..., D) contiguous -> a new array: (x - mean) / sqrt(var + eps) * weight + bias."""
    import cupy
    D = x.shape[-1]
    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    rows = x.size // D
    threads = 128 if D <= 1024 else 256
    _kernel("layer_norm", x.dtype)(
        (rows,), (threads,), (x, weight, bias, y, np.int32(D), np.float32(eps)))
    return y


def attention_softmax_(scores, scale, mask=None, heads=1):
    """scores (N*H, T, L) contiguous, in place: softmax over L of scores * scale, plus the
    dtype's min where mask (N, L) is 0. -> scores"""
    import cupy
    B, T, L = scores.shape
    has_mask = mask is not None
    m = cupy.ascontiguousarray(mask, dtype=cupy.int64) if has_mask else scores  # never read
    rows = B * T
    warps = 4
    masked = float(np.finfo(scores.dtype).min)
    _kernel("softmax", scores.dtype)(
        (-(-rows // warps),), (32 * warps,),
        (scores, m, np.int32(has_mask), np.int32(L), np.int32(T * heads), np.int32(rows),
         np.float32(scale), np.float32(masked)))
    return scores
