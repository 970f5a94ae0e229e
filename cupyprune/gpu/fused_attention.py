"""Self-attention in one kernel for fp16 and bf16 at short sequences (ViT's 65 tokens, BERT's 128).

One block per (sample, head): its keys and values are copied into shared memory by `cp.async`
(a copy group per key chunk, so the first chunk's work starts while the rest arrive), and each
warp takes 16 query rows through tensor-core `mma.m16n8k16` instructions: scores = q k^T in fp32
registers, the scale, the padding mask and the softmax on those registers (no scores in memory),
the probabilities rounded to the storage type, and out = p v in fp32 (the values read
transposed by `ldmatrix.trans`), written merged into (N, T, D). Past 80 tokens the keys come in
chunks (64 at BERT's 128) with a running max and sum per row, flash attention's online softmax,
so that a lane holds one chunk's scores: all 128 at once took 163 registers a thread and ran slower
than the GEMM path. It replaces the padding copy, the pointer kernel, two batched GEMMs and the
softmax kernel (gpu/attention.py). Needs compute capability 8.0. Fragment layouts: PTX ISA, "Matrix
Fragments for mma.m16n8k16 with floating point type" and "ldmatrix". docs/DESIGN_NOTES.md,
"Attention in one tensor-core kernel (fp16, bf16, up to 80 tokens)", "The fused attention at 128
tokens: keys in chunks" and "The fused attention's staging: cp.async, ldmatrix.trans, a bias row".

Legend: N batch, T tokens, H heads, dh head size, D = H * dh, TP = T padded to 16.
"""
import numpy as np

from .cuda_source import MMA_SOURCE, compile_kernel

HEAD_SIZES = (16, 32, 64)          # dh the kernel is built for
MAX_TOKENS = 128                   # keys and values of one head in 48 KB of shared memory
_KERNELS = {}

_SOURCE = r"""
#define DH @DH@
#define TP @TP@
#define KC @KC@              // keys per softmax chunk: a multiple of 16 that divides TP
#define QW @QW@              // warps (16 query rows each) per block
#define KS (DH + 8)          // key and value row stride in shared memory (halves): no conflicts
__device__ __forceinline__ unsigned ld32(const unsigned short* p) {
    return *(const unsigned*)p;
}
__device__ __forceinline__ float row_max(float x) {            // over the 4 lanes of a row
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float row_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
// q, k, v, out (N, T, D) of 16-bit values; mask (N, T) of 0/1 when has_mask. Block
// b = (n*H + h) * QB + qb, QB = ceil(TP / (16 * QW)), 32 * QW threads; warp w owns query rows
// 16 * (qb * QW + w) .. + 15. Keys are taken KC at a time with a running max and sum (the
// online softmax of flash attention), so a lane holds KC / 2 scores, not TP / 2.
extern "C" __global__ void @BOUNDS@ @NAME@(
        const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
        const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
        const long long* __restrict__ mask, int has_mask, int T, int H, float scale,
        float masked) {
    __shared__ __align__(16) unsigned short ks[TP * KS];        // keys, row-major
    __shared__ __align__(16) unsigned short vs[TP * KS];        // values, row-major
    __shared__ float bias[TP];            // added to a key's scores: 0, masked, or -inf past T
    const int QB = (TP / 16 + QW - 1) / QW;
    const int bh = blockIdx.x / QB, qb = blockIdx.x % QB, n = bh / H, h = bh % H, D = H * DH;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const size_t head = (size_t)n * T * D + (size_t)h * DH;
    for (int k0 = 0; k0 < TP; k0 += KC) {      // a copy group per chunk, 16 bytes a copy
        for (int i = threadIdx.x; i < KC * (DH / 8); i += blockDim.x) {
            const int r = k0 + i / (DH / 8), c = (i % (DH / 8)) * 8;
            const size_t src = r < T ? head + (size_t)r * D + c : 0;        // rows past T: zero
            cp_async16(smem_addr(ks + r * KS + c), k + src, r < T ? 16 : 0);
            cp_async16(smem_addr(vs + r * KS + c), v + src, r < T ? 16 : 0);
        }
        asm volatile("cp.async.commit_group;");
    }
    const float ninf = __int_as_float(0xff800000);
    for (int i = threadIdx.x; i < TP; i += blockDim.x)
        bias[i] = i >= T ? ninf : (has_mask && mask[(size_t)n * T + i] == 0) ? masked : 0.f;
    const int row0 = (qb * QW + warp) * 16;
    const int ra = row0 + g, rb = ra + 8;                         // this lane's two query rows
    const bool active = row0 < T;          // idle warps still meet every barrier
    unsigned qa[DH / 16][4];                                      // A fragments of q
    #pragma unroll
    for (int s = 0; s < DH / 16; ++s) {
        const int c = s * 16 + t4 * 2;
        qa[s][0] = ra < T ? ld32(q + head + (size_t)ra * D + c) : 0u;
        qa[s][1] = rb < T ? ld32(q + head + (size_t)rb * D + c) : 0u;
        qa[s][2] = ra < T ? ld32(q + head + (size_t)ra * D + c + 8) : 0u;
        qa[s][3] = rb < T ? ld32(q + head + (size_t)rb * D + c + 8) : 0u;
    }
    float mxa = ninf, mxb = ninf, suma = 0.f, sumb = 0.f;         // running, per row
    float acc[DH / 8][4];                                         // out tile j: columns 8j..
    #pragma unroll
    for (int j = 0; j < DH / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    #pragma unroll 1
    for (int k0 = 0; k0 < TP; k0 += KC) {     // every chunk holds a key < T (TP - KC < T)
        // the first chunk's copies (and those before the last), then every copy
        if (k0 == 0 && KC < TP) asm volatile("cp.async.wait_group 1;");
        else asm volatile("cp.async.wait_group 0;");
        __syncthreads();
        if (!active) continue;
        float sc[KC / 8][4];      // scores: tile j holds keys k0 + 8j + 2*t4 + {0, 1} of ra, rb
        #pragma unroll
        for (int j = 0; j < KC / 8; ++j) {
            sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
            const unsigned short* kr = ks + (k0 + j * 8 + g) * KS + t4 * 2;
            #pragma unroll
            for (int s = 0; s < DH / 16; ++s)
                mma16816(sc[j], qa[s], ld32(kr + s * 16), ld32(kr + s * 16 + 8));
        }
        float cma = ninf, cmb = ninf;
        #pragma unroll
        for (int j = 0; j < KC / 8; ++j)
            #pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float add = bias[k0 + j * 8 + t4 * 2 + e];
                sc[j][e] = sc[j][e] * scale + add;
                sc[j][2 + e] = sc[j][2 + e] * scale + add;
                cma = fmaxf(cma, sc[j][e]);
                cmb = fmaxf(cmb, sc[j][2 + e]);
            }
        cma = fmaxf(mxa, row_max(cma));
        cmb = fmaxf(mxb, row_max(cmb));
        const float fa = expf(mxa - cma), fb = expf(mxb - cmb);  // 0 on the first chunk
        mxa = cma;
        mxb = cmb;
        suma *= fa;
        sumb *= fb;
        #pragma unroll
        for (int j = 0; j < DH / 8; ++j) {
            acc[j][0] *= fa; acc[j][1] *= fa; acc[j][2] *= fb; acc[j][3] *= fb;
        }
        #pragma unroll
        for (int s = 0; s < KC / 16; ++s) {     // keys k0+16s..: score tiles 2s, 2s+1 as A
            unsigned pa[4];
            float p[8];
            #pragma unroll
            for (int e = 0; e < 2; ++e) {
                p[e] = expf(sc[2 * s][e] - mxa);
                p[2 + e] = expf(sc[2 * s][2 + e] - mxb);
                p[4 + e] = expf(sc[2 * s + 1][e] - mxa);
                p[6 + e] = expf(sc[2 * s + 1][2 + e] - mxb);
            }
            suma += p[0] + p[1] + p[4] + p[5];
            sumb += p[2] + p[3] + p[6] + p[7];
            pa[0] = pack2(p[0], p[1]);
            pa[1] = pack2(p[2], p[3]);
            pa[2] = pack2(p[4], p[5]);
            pa[3] = pack2(p[6], p[7]);
            // B fragments of values: keys k0+16s.. (lanes' rows), columns 16jj + 8 * (lane / 16)
            const unsigned short* vr = vs + (k0 + s * 16 + (lane & 15)) * KS + (lane >> 4) * 8;
            #pragma unroll
            for (int jj = 0; jj < DH / 16; ++jj) {
                unsigned b[4];
                ldsm_x4_trans(b, smem_addr(vr + jj * 16));
                mma16816(acc[2 * jj], pa, b[0], b[1]);
                mma16816(acc[2 * jj + 1], pa, b[2], b[3]);
            }
        }
    }
    if (!active) return;
    const float ia = 1.f / row_sum(suma), ib = 1.f / row_sum(sumb);
    #pragma unroll
    for (int j = 0; j < DH / 8; ++j) {
        const int c = j * 8 + t4 * 2;
        if (ra < T)
            *(unsigned*)(out + head + (size_t)ra * D + c) = pack2(acc[j][0] * ia, acc[j][1] * ia);
        if (rb < T)
            *(unsigned*)(out + head + (size_t)rb * D + c) = pack2(acc[j][2] * ib, acc[j][3] * ib);
    }
}
"""


def chunk_keys(tp):
    """Keys per softmax chunk: all of them up to 80 (ViT's 65 tokens in one pass), else the
    largest multiple of 16 up to 64 that divides tp (128 -> 64: 32 score registers a lane)."""
    if tp <= 80:
        return tp
    return next(kc for kc in (64, 48, 32, 16) if tp % kc == 0)


def block_warps(tp):
    """Warps (16 query rows each) per block: one block per (sample, head). At BERT's 128 tokens
    eight warps took 0.567 ms per 12 calls, two blocks of four 0.588, four of two 1.089 (fp16,
    H100; bf16 alike: experiments/attention-layouts-chunked.json)."""
    return tp // 16


def _bounds(tp, qw):
    """Past 80 tokens, registers capped at 128 a thread (16 warps an SM; 163 with all 128 keys'
    scores at once, 130 with chunks, uncapped); up to 80, ptxas's own choice (about 100 at ViT's
    65 tokens; capping it at 96 spilled)."""
    return f"__launch_bounds__({32 * qw}, {max(1, 16 // qw)})" if tp > 80 else ""


def _source(ptx, dh, tp, qw):
    kc = chunk_keys(tp)
    name = f"cupyprune_fused_attention_{ptx}_d{dh}_t{tp}_w{qw}"
    return name, ((MMA_SOURCE + _SOURCE).replace("@NAME@", name).replace("@PTX@", ptx)
                  .replace("@DH@", str(dh)).replace("@TP@", str(tp))
                  .replace("@KC@", str(kc)).replace("@QW@", str(qw))
                  .replace("@BOUNDS@", _bounds(tp, qw)))


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for ptx in ("f16", "bf16"):
        for dh in HEAD_SIZES:
            yield _source(ptx, dh, MAX_TOKENS, block_warps(MAX_TOKENS))
    yield _source("f16", 64, 80, block_warps(80))                   # ViT's 65 tokens
    yield _source("f16", 32, 112, block_warps(112))                 # seven chunks of 16 keys
    yield _source("bf16", 64, 96, 6)                                # chunks of 48, 6 warps


_CAPABLE = {}                      # device id -> compute capability >= 8.0


def _sm80(device):
    """mma.m16n8k16 in 16-bit types, ldmatrix and cp.async need compute capability 8.0
    (Ampere) or later; on a Turing or Volta GPU attention takes the GEMM path."""
    if device.id not in _CAPABLE:
        _CAPABLE[device.id] = int(device.compute_capability) >= 80
    return _CAPABLE[device.id]


def applies(q, k, v, heads):
    """Whether the fused kernel runs this attention: 2-byte storage, a head size and length it
    is built for, operands 16-byte aligned (it loads keys and values 16 bytes at a time), and a
    GPU of compute capability 8.0 or later."""
    T, D = q.shape[1], q.shape[2]
    return (q.dtype.itemsize == 2 and D // heads in HEAD_SIZES and 0 < T <= MAX_TOKENS
            and all(a.data.ptr % 16 == 0 for a in (q, k, v)) and _sm80(q.device))


def fused_self_attention(q, k, v, heads, mask=None, warps=None):
    """q, k, v (N, T, D) C-contiguous fp16 or bf16 (uint16 bits) CuPy arrays that `applies`;
    mask (N, T) of 0/1 or None -> (N, T, D). warps: per block, block_warps' choice when None
    (tools/attention_layouts.py times the others)."""
    import cupy
    from ..precision import is_bf16, lowest
    N, T, D = q.shape
    dh = D // heads
    tp = -(-T // 16) * 16
    ptx = "bf16" if is_bf16(q.dtype) else "f16"
    qw = warps or block_warps(tp)
    kernel = compile_kernel(_KERNELS, (ptx, dh, tp, qw), lambda: _source(ptx, dh, tp, qw))
    has_mask = mask is not None
    m = cupy.ascontiguousarray(mask, dtype=cupy.int64) if has_mask else q        # never read
    out = cupy.empty_like(q)
    blocks_per_head = -(-(tp // 16) // qw)
    kernel((N * heads * blocks_per_head,), (32 * qw,),
           (q, k, v, out, m, np.int32(has_mask), np.int32(T), np.int32(heads),
            np.float32(1.0 / np.sqrt(dh)), np.float32(lowest(q.dtype))))
    return out
