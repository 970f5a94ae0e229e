"""Row-wise transformer kernels, one launch each: layer norm, and the attention softmax with its
scale and padding mask. CuPy's generic ops took 8-9 launches for each (docs/DESIGN_NOTES.md,
"Measure first: a CUPTI kernel breakdown"), every one a full pass over the activations.

Both compute in float whatever the storage type (as PyTorch does for half). A row of up to 1,024
values is held in one warp's registers (read once, written once, reduced by shuffles); longer
rows loop over memory, layer norm with a block per row.
"""
import numpy as np

from ..precision import lowest
from .cuda_source import (STORAGE_TYPES, compile_kernel, storage_type, type_bytes, type_tag,
                          values_per_pack)

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

# s (N*H, T, ld) in place, one warp per row: softmax(s * scale + (mask[n, j] == 0 ? masked : 0))
# over j < L <= ld, with n = row / (T * H): Hugging Face's additive padding mask of the dtype's
# min. Columns L..ld-1 (padding that keeps the attention GEMMs' rows 16-byte aligned) are
# written as zeros.
_SOFTMAX_HEAD = r"""
#define SCORE(j) (to_f(r[j]) * scale + ((has_mask && m[j] == 0) ? masked : 0.f))
#define ZERO_PADDING for (int j = L + lane; j < ld; j += 32) store_f(r + j, 0.f);
extern "C" __global__ void %(name)s(%(T)s* s, const long long* mask, int has_mask, int L,
                                    int ld, int rows_per_sample, int rows, float scale,
                                    float masked) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int lane = threadIdx.x & 31;
    %(T)s* r = s + (size_t)row * ld;
    const long long* m = mask + (size_t)(row / rows_per_sample) * L;
    float mx = __int_as_float(0xff800000);          // -inf
"""

_SOFTMAX = _SOFTMAX_HEAD + r"""
    for (int j = lane; j < L; j += 32) mx = fmaxf(mx, SCORE(j));
    mx = warp_max(mx);
    float sum = 0.f;
    for (int j = lane; j < L; j += 32) sum += expf(SCORE(j) - mx);
    float inv = 1.f / warp_sum(sum);
    for (int j = lane; j < L; j += 32) store_f(r + j, expf(SCORE(j) - mx) * inv);
    ZERO_PADDING
}
"""


_LAYER_NORM_WARP = r"""
// x, y (rows, D), D <= 32 * %(vpl)d: one warp per row, the row held in registers (%(vpl)d values
// per lane): one read of x, one write of y, reductions by warp shuffles only.
extern "C" __global__ void %(name)s(const %(T)s* x, const %(T)s* w, const %(T)s* b, %(T)s* y,
                                    int D, int rows, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int lane = threadIdx.x & 31;
    const %(T)s* xr = x + (size_t)row * D;
    %(T)s* yr = y + (size_t)row * D;
    float v[%(vpl)d];
    float s = 0.f;
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int j = lane + 32 * i;
        v[i] = j < D ? to_f(xr[j]) : 0.f;
        s += v[i];
    }
    float mean = warp_sum(s) / D;
    float q = 0.f;
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        float d = v[i] - mean;
        q += (lane + 32 * i < D) ? d * d : 0.f;
    }
    float rstd = rsqrtf(warp_sum(q) / D + eps);
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int j = lane + 32 * i;
        if (j < D) store_f(yr + j, (v[i] - mean) * rstd * to_f(w[j]) + to_f(b[j]));
    }
}
"""

_LAYER_NORM_PACKED = r"""
// As above, moving %(pack)d values per load and store (16 bytes): lane l holds packs l, l + 32,
// ... of the row, %(vpl)d packs per lane. D a multiple of %(pack)d; x, w, b, y 16-byte aligned.
struct __align__(16) Pack { %(T)s v[%(pack)d]; };
extern "C" __global__ void %(name)s(const %(T)s* x, const %(T)s* w, const %(T)s* b, %(T)s* y,
                                    int D, int rows, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    int lane = threadIdx.x & 31, packs = D / %(pack)d;
    const Pack* xr = (const Pack*)(x + (size_t)row * D);
    Pack* yr = (Pack*)(y + (size_t)row * D);
    float v[%(vpl)d][%(pack)d];
    float s = 0.f;
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int p = lane + 32 * i;
        Pack q;
        if (p < packs) q = xr[p];
        #pragma unroll
        for (int k = 0; k < %(pack)d; ++k) {
            v[i][k] = p < packs ? to_f(q.v[k]) : 0.f;
            s += v[i][k];
        }
    }
    float mean = warp_sum(s) / D;
    float q2 = 0.f;
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i)
        #pragma unroll
        for (int k = 0; k < %(pack)d; ++k) {
            float d = v[i][k] - mean;
            q2 += (lane + 32 * i < packs) ? d * d : 0.f;
        }
    float rstd = rsqrtf(warp_sum(q2) / D + eps);
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int p = lane + 32 * i;
        if (p >= packs) continue;
        Pack wp = ((const Pack*)w)[p], bp = ((const Pack*)b)[p], out;
        #pragma unroll
        for (int k = 0; k < %(pack)d; ++k)
            store_f(&out.v[k], (v[i][k] - mean) * rstd * to_f(wp.v[k]) + to_f(bp.v[k]));
        yr[p] = out;
    }
}
"""

# As the softmax above, for L <= 32 * vpl: the row held in registers (vpl values per lane), so s
# is read once and written once and each exp is taken once.
_SOFTMAX_WARP = _SOFTMAX_HEAD + r"""
    float v[%(vpl)d];
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int j = lane + 32 * i;
        v[i] = j < L ? SCORE(j) : mx;
        mx = fmaxf(mx, v[i]);
    }
    mx = warp_max(mx);
    float sum = 0.f;
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        v[i] = lane + 32 * i < L ? expf(v[i] - mx) : 0.f;
        sum += v[i];
    }
    float inv = 1.f / warp_sum(sum);
    #pragma unroll
    for (int i = 0; i < %(vpl)d; ++i) {
        int j = lane + 32 * i;
        if (j < L) store_f(r + j, v[i] * inv);
    }
    ZERO_PADDING
}
"""

# Rows up to 32 * 32 values run warp-per-row from registers; longer ones use the loops above.
_WARP_WIDTHS = (1, 2, 4, 8, 16, 24, 32)        # values per lane: 24 fits BERT-base's D = 768
_WARPS_PER_BLOCK = 4
# A warp per row fills the GPU only with rows enough; fewer rows (batch 1: BERT's 128, ViT's 65)
# keep a block per row, else each of a few warps walks a whole row alone (measured slower).
_WARP_ROWS_MIN = 1024
_SOURCES = {"layer_norm": _LAYER_NORM, "softmax": _SOFTMAX,
            "layer_norm_warp": _LAYER_NORM_WARP, "softmax_warp": _SOFTMAX_WARP,
            "layer_norm_packed": _LAYER_NORM_PACKED}
_MAX_WARP_ROW = 32 * _WARP_WIDTHS[-1]          # values


def _packed_widths(T):
    """Packs per lane the packed layer norm is built for: rows up to _MAX_WARP_ROW values."""
    return range(1, _MAX_WARP_ROW // (32 * values_per_pack(type_bytes(T))) + 1)


def _widths(kind, T):
    if kind == "layer_norm_packed":
        return _packed_widths(T)
    return _WARP_WIDTHS if kind.endswith("_warp") else (0,)


def _source(kind, T, vpl=0):
    name = f"cupyprune_{kind}{vpl or ''}_{type_tag(T)}"
    return name, _SOURCES[kind] % {"T": T, "name": name, "vpl": vpl,
                                   "pack": values_per_pack(type_bytes(T))}


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for kind in _SOURCES:
        for T in STORAGE_TYPES:
            for vpl in _widths(kind, T):
                yield _source(kind, T, vpl)


def _kernel(kind, dtype, vpl=0):
    key = (kind, storage_type(dtype), vpl)
    return compile_kernel(_KERNELS, key, lambda: _source(*key))


def _warp_width(n):
    """Values per lane for a row of n held in one warp's registers, or None when too long."""
    return next((v for v in _WARP_WIDTHS if 32 * v >= n), None)


def layer_norm(x, weight, bias, eps):
    """x (..., D) contiguous -> a new array: (x - mean) / sqrt(var + eps) * weight + bias."""
    import cupy
    D = x.shape[-1]
    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    rows = x.size // D
    vpl = _warp_width(D)
    if vpl is not None and rows >= _WARP_ROWS_MIN:
        pack = values_per_pack(x.dtype.itemsize)
        if D % pack == 0 and not any(a.data.ptr % 16 for a in (x, weight, bias, y)):
            kind, width = "layer_norm_packed", -(-D // (32 * pack))     # 16-byte accesses
        else:
            kind, width = "layer_norm_warp", vpl
        _kernel(kind, x.dtype, width)(
            (-(-rows // _WARPS_PER_BLOCK),), (32 * _WARPS_PER_BLOCK,),
            (x, weight, bias, y, np.int32(D), np.int32(rows), np.float32(eps)))
        return y
    threads = 128 if D <= 1024 else 256
    _kernel("layer_norm", x.dtype)(
        (rows,), (threads,), (x, weight, bias, y, np.int32(D), np.float32(eps)))
    return y


def attention_softmax_(scores, scale, mask=None, heads=1, length=None):
    """scores (N*H, T, ld) contiguous, in place: softmax over the first L = length (default ld)
    columns of scores * scale, plus the dtype's min where mask (N, L) is 0; columns L.. are set
    to zero. -> scores"""
    import cupy
    B, T, ld = scores.shape
    L = ld if length is None else length
    has_mask = mask is not None
    m = cupy.ascontiguousarray(mask, dtype=cupy.int64) if has_mask else scores  # never read
    rows = B * T
    warps = _WARPS_PER_BLOCK
    masked = lowest(scores.dtype)
    vpl = _warp_width(L)
    kernel = (_kernel("softmax", scores.dtype) if vpl is None
              else _kernel("softmax_warp", scores.dtype, vpl))
    kernel(
        (-(-rows // warps),), (32 * warps,),
        (scores, m, np.int32(has_mask), np.int32(L), np.int32(ld), np.int32(T * heads),
         np.int32(rows), np.float32(scale), np.float32(masked)))
    return scores
