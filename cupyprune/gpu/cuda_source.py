"""Shared CUDA C for the runtime's own kernels: storage types, float conversion, reductions.

Kernels keep activations in their storage type (float for fp32/tf32 runs, IEEE half for fp16
runs, bfloat16 for bf16 runs) and compute in float. Half values are moved as raw 16-bit words
and converted with PTX `cvt`, bfloat16 ones as `bf16_t` (its bits: the top half of a float),
so no CUDA header is needed when NVRTC compiles a kernel on the user's machine.
"""
import numpy as np

from ..precision import BF16

# bfloat16: a float's top 16 bits; rounded to nearest even, NaN kept (bf16.py does the same on
# the host)
BF16_SOURCE = r"""
struct __align__(2) bf16_t { unsigned short bits; };
__device__ __forceinline__ float to_f(bf16_t h) {
    return __uint_as_float((unsigned)h.bits << 16);
}
__device__ __forceinline__ void store_f(bf16_t* p, float v) {
    unsigned u = __float_as_uint(v);
    bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    p->bits = (unsigned short)(nan ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
"""

PRELUDE = BF16_SOURCE + r"""
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(unsigned short* p, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); *p = h;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    __syncthreads();                      // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? scratch[lane] : 0.f);
}
"""

# Tensor-core helpers of the kernels that issue mma.sync themselves (fused attention, implicit
# conv): @PTX@ is f16 or bf16, substituted with the kernel's other placeholders. They need
# compute capability 8.0 (mma.m16n8k16 in 16-bit types, ldmatrix, cp.async).
MMA_SOURCE = r"""
__device__ __forceinline__ void mma16816(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.@PTX@.@PTX@.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// two floats -> one register of two 16-bit values, lo in the low half (round to nearest even)
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.@PTX@x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// four 8x8 matrices of 16-bit values: lanes 8i..8i+7 give matrix i's row addresses
__device__ __forceinline__ void ldsm_x4(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// four 8x8 matrices of 16-bit values, transposed: lanes 8i..8i+7 give matrix i's row addresses
__device__ __forceinline__ void ldsm_x4_trans(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// 16 bytes global -> shared without registers; bytes < 16 fills the rest with zeros
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes));
}
"""

_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float16): "unsigned short",
            BF16: "bf16_t"}
STORAGE_DTYPES = tuple(_STORAGE)                # every dtype a kernel may be built for
STORAGE_TYPES = tuple(_STORAGE.values())        # and its C type
_TAGS = {"float": "f32", "unsigned short": "f16", "bf16_t": "bf16"}
_BYTES = {T: dtype.itemsize for dtype, T in _STORAGE.items()}


def storage_type(dtype):
    """numpy dtype -> the C type a kernel stores it as (float, raw half bits or bf16_t)."""
    try:
        return _STORAGE[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no GPU kernel for dtype {np.dtype(dtype)}") from None


def type_tag(T):
    """A storage C type -> its short name in kernel names: f32, f16, bf16."""
    return _TAGS[T]


def type_bytes(T):
    return _BYTES[T]


def values_per_pack(itemsize):
    """Values of `itemsize` bytes in one 16-byte vector load or store (8 in fp16, 4 in fp32):
    the unit our copy kernels (im2col, gather) give a thread."""
    return 16 // itemsize


def compile_kernel(cache, key, make_source, options=()):
    """A cupy.RawKernel compiled once per key, lazily (importing this module touches no GPU):
    make_source() -> (kernel name, CUDA source) runs only on the first call for a key, so a
    launch on the hot path costs one dict lookup. options: NVRTC's (an -arch given here comes
    before CuPy's own and names the target, e.g. sm_90a)."""
    if key not in cache:
        import cupy
        name, source = make_source()
        cache[key] = cupy.RawKernel(PRELUDE + source, name, options=tuple(options))
    return cache[key]
