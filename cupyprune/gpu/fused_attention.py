"""Self-attention in one kernel for fp16 and bf16 at short sequences (ViT's 65 tokens, BERT's 128).

One block per (sample, head): its keys and values are staged in shared memory (values
transposed), and each warp takes 16 query rows through tensor-core `mma.m16n8k16` instructions:
scores = q k^T in fp32 registers, the scale, the padding mask and the softmax on those registers
(no scores in memory), the probabilities rounded to the storage type, and out = p v in fp32,
written merged into (N, T, D). It replaces the padding copy, the pointer kernel, two batched
GEMMs and the softmax kernel (gpu/attention.py). Fragment layouts: PTX ISA, "Matrix Fragments
for mma.m16n8k16 with floating point type".

Legend: N batch, T tokens, H heads, dh head size, D = H * dh, TP = T padded to 16.
"""
import numpy as np

from .cuda_source import compile_kernel

HEAD_SIZES = (16, 32, 64)          # dh the kernel is built for
MAX_TOKENS = 128                   # keys and values of one head in 48 KB of shared memory
_KERNELS = {}

_SOURCE = r"""
#define DH @DH@
#define TP @TP@
#define KS (DH + 8)          // key row stride in shared memory (halves): conflict-free loads
#define VS (TP + 8)          // transposed value row stride
struct __align__(16) Pack16 { unsigned int w[4]; };
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
__device__ __forceinline__ unsigned ld32(const unsigned short* p) {
    return *(const unsigned*)p;
}
// q, k, v, out (N, T, D) of 16-bit values; mask (N, T) of 0/1 when has_mask. Block b = n*H + h,
// 32 * ceil(T / 16) threads; warp w owns query rows 16w .. 16w + 15.
extern "C" __global__ void @NAME@(
        const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
        const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
        const long long* __restrict__ mask, int has_mask, int T, int H, float scale,
        float masked) {
    __shared__ __align__(16) unsigned short ks[TP * KS];        // keys, row-major
    __shared__ __align__(16) unsigned short vt[DH * VS];        // values transposed
    const int b = blockIdx.x, n = b / H, h = b % H, D = H * DH;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const size_t head = (size_t)n * T * D + (size_t)h * DH;
    for (int i = threadIdx.x; i < TP * (DH / 8); i += blockDim.x) {     // 16 bytes a load
        const int r = i / (DH / 8), c = (i % (DH / 8)) * 8;
        Pack16 kk = {{0u, 0u, 0u, 0u}}, vv = kk;                        // rows past T: zero
        if (r < T) {
            kk = *(const Pack16*)(k + head + (size_t)r * D + c);
            vv = *(const Pack16*)(v + head + (size_t)r * D + c);
        }
        *(Pack16*)(ks + r * KS + c) = kk;
        const unsigned short* vh = (const unsigned short*)&vv;
        #pragma unroll
        for (int j = 0; j < 8; ++j) vt[(c + j) * VS + r] = vh[j];
    }
    __syncthreads();
    const int ra = warp * 16 + g, rb = ra + 8;                    // this lane's two query rows
    if (warp * 16 >= T) return;
    unsigned qa[DH / 16][4];                                      // A fragments of q
    #pragma unroll
    for (int s = 0; s < DH / 16; ++s) {
        const int c = s * 16 + t4 * 2;
        qa[s][0] = ra < T ? ld32(q + head + (size_t)ra * D + c) : 0u;
        qa[s][1] = rb < T ? ld32(q + head + (size_t)rb * D + c) : 0u;
        qa[s][2] = ra < T ? ld32(q + head + (size_t)ra * D + c + 8) : 0u;
        qa[s][3] = rb < T ? ld32(q + head + (size_t)rb * D + c + 8) : 0u;
    }
    float sc[TP / 8][4];          // scores: tile j holds keys 8j + 2*t4 + {0, 1} of rows ra, rb
    #pragma unroll
    for (int j = 0; j < TP / 8; ++j) {
        sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
        const unsigned short* kr = ks + (j * 8 + g) * KS + t4 * 2;
        #pragma unroll
        for (int s = 0; s < DH / 16; ++s)
            mma16816(sc[j], qa[s], ld32(kr + s * 16), ld32(kr + s * 16 + 8));
    }
    const long long* m = mask + (size_t)n * T;
    const float ninf = __int_as_float(0xff800000);
    float mxa = ninf, mxb = ninf;
    #pragma unroll
    for (int j = 0; j < TP / 8; ++j)
        #pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int key = j * 8 + t4 * 2 + e;
            if (key < T) {
                const float add = (has_mask && m[key] == 0) ? masked : 0.f;
                sc[j][e] = sc[j][e] * scale + add;
                sc[j][2 + e] = sc[j][2 + e] * scale + add;
                mxa = fmaxf(mxa, sc[j][e]);
                mxb = fmaxf(mxb, sc[j][2 + e]);
            } else {
                sc[j][e] = sc[j][2 + e] = ninf;                     // padding: weight 0
            }
        }
    #pragma unroll
    for (int o = 1; o < 4; o <<= 1) {                             // the 4 lanes of a row
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, o));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, o));
    }
    float suma = 0.f, sumb = 0.f;
    #pragma unroll
    for (int j = 0; j < TP / 8; ++j)
        #pragma unroll
        for (int e = 0; e < 2; ++e) {
            sc[j][e] = expf(sc[j][e] - mxa);
            sc[j][2 + e] = expf(sc[j][2 + e] - mxb);
            suma += sc[j][e];
            sumb += sc[j][2 + e];
        }
    #pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
        suma += __shfl_xor_sync(0xffffffffu, suma, o);
        sumb += __shfl_xor_sync(0xffffffffu, sumb, o);
    }
    const float ia = 1.f / suma, ib = 1.f / sumb;
    float acc[DH / 8][4];                                         // out tile j: columns 8j..
    #pragma unroll
    for (int j = 0; j < DH / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    #pragma unroll
    for (int s = 0; s < TP / 16; ++s) {         // keys 16s..16s+15: score tiles 2s, 2s+1 as A
        unsigned pa[4];
        pa[0] = pack2(sc[2 * s][0] * ia, sc[2 * s][1] * ia);
        pa[1] = pack2(sc[2 * s][2] * ib, sc[2 * s][3] * ib);
        pa[2] = pack2(sc[2 * s + 1][0] * ia, sc[2 * s + 1][1] * ia);
        pa[3] = pack2(sc[2 * s + 1][2] * ib, sc[2 * s + 1][3] * ib);
        #pragma unroll
        for (int j = 0; j < DH / 8; ++j) {
            const unsigned short* vr = vt + (j * 8 + g) * VS + s * 16 + t4 * 2;
            mma16816(acc[j], pa, ld32(vr), ld32(vr + 8));
        }
    }
    #pragma unroll
    for (int j = 0; j < DH / 8; ++j) {
        const int c = j * 8 + t4 * 2;
        if (ra < T) *(unsigned*)(out + head + (size_t)ra * D + c) = pack2(acc[j][0], acc[j][1]);
        if (rb < T) *(unsigned*)(out + head + (size_t)rb * D + c) = pack2(acc[j][2], acc[j][3]);
    }
}
"""


def _source(ptx, dh, tp):
    name = f"cupyprune_fused_attention_{ptx}_d{dh}_t{tp}"
    return name, (_SOURCE.replace("@NAME@", name).replace("@PTX@", ptx)
                  .replace("@DH@", str(dh)).replace("@TP@", str(tp)))


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for ptx in ("f16", "bf16"):
        for dh in HEAD_SIZES:
            yield _source(ptx, dh, MAX_TOKENS)
    yield _source("f16", 64, 80)                    # ViT's 65 tokens


def applies(q, k, v, heads):
    """Whether the fused kernel runs this attention: 2-byte storage, a head size and length it
    is built for, and operands 16-byte aligned (it loads keys and values 16 bytes at a time)."""
    T, D = q.shape[1], q.shape[2]
    return (q.dtype.itemsize == 2 and D // heads in HEAD_SIZES and 0 < T <= MAX_TOKENS
            and all(a.data.ptr % 16 == 0 for a in (q, k, v)))


def fused_self_attention(q, k, v, heads, mask=None):
    """q, k, v (N, T, D) C-contiguous fp16 or bf16 (uint16 bits) CuPy arrays that `applies`;
    mask (N, T) of 0/1 or None -> (N, T, D)."""
    import cupy
    from ..precision import is_bf16, lowest
    N, T, D = q.shape
    dh = D // heads
    tp = -(-T // 16) * 16
    ptx = "bf16" if is_bf16(q.dtype) else "f16"
    kernel = compile_kernel(_KERNELS, (ptx, dh, tp), lambda: _source(ptx, dh, tp))
    has_mask = mask is not None
    m = cupy.ascontiguousarray(mask, dtype=cupy.int64) if has_mask else q        # never read
    out = cupy.empty_like(q)
    kernel((N * heads,), (32 * (tp // 16),),
           (q, k, v, out, m, np.int32(has_mask), np.int32(T), np.int32(heads),
            np.float32(1.0 / np.sqrt(dh)), np.float32(lowest(q.dtype))))
    return out
