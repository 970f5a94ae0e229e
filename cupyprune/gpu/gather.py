"""The group-wise linear's gather (paper Algorithm 2, step 1): the kept input features of every
row, x[:, cols], written as the compacted GEMM's A operand.

CuPy's fancy indexing did this at about a quarter of the copy ceiling on the H100 (one thread and
64-bit index arithmetic per element, 2-byte stores in fp16): at BERT's 8,192 tokens the gather cost
as much as the GEMM work it saved (docs/DESIGN_NOTES.md, "A gather kernel for group-wise linears").
Here a thread writes one 16-byte pack of consecutive outputs of a row (the kept count is padded to a
multiple of 8: paths/group.py), reading its packs' column indices once.
"""
import functools

import numpy as np

from .cuda_source import (STORAGE_DTYPES, compile_kernel, storage_type, type_bytes,
                          values_per_pack)

_KERNELS = {}

_GATHER = r"""
struct __align__(%(pack_bytes)d) Pack { %(T)s v[%(pack)d]; };
// out (rows, packs_per_row * %(pack)d) <- x[:, cols], x's rows ld elements apart; thread i
// writes pack (i %% packs_per_row) of row (i / packs_per_row)
extern "C" __global__ void %(name)s(const %(T)s* __restrict__ x, long long ld,
                                    const int* __restrict__ cols, Pack* __restrict__ out,
                                    long long rows, int packs_per_row) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= rows * packs_per_row) return;
    long long m = i / packs_per_row;
    const %(T)s* row = x + m * ld;
    const int* c = cols + (int)(i - m * packs_per_row) * %(pack)d;
    Pack p;
    #pragma unroll
    for (int k = 0; k < %(pack)d; ++k) p.v[k] = row[c[k]];
    out[i] = p;
}
"""


def _source(T, pack):
    name = f"cupyprune_gather_{T.replace(' ', '_')}_{pack}"
    size = type_bytes(T)
    return name, _GATHER % {"T": T, "pack": pack, "pack_bytes": pack * size, "name": name}


@functools.cache
def _packs(itemsize):
    """Pack widths to try, widest first: one 16-byte store, else 8, 4 or 2 bytes."""
    return tuple(sorted({values_per_pack(itemsize), 8 // itemsize, 2, 1}, reverse=True))


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for dtype in STORAGE_DTYPES:
        for pack in _packs(np.dtype(dtype).itemsize):
            yield _source(storage_type(dtype), pack)


def gather_columns(x, cols):
    """x (M, R), cols int32 (T,) of column indices -> (M, T) = x[:, cols], a new array. NumPy
    arrays (and dtypes without a kernel) take NumPy's/CuPy's indexing."""
    if isinstance(x, np.ndarray) or x.dtype not in STORAGE_DTYPES:
        return x[:, cols]
    import cupy
    if x.strides[1] != x.itemsize:
        x = cupy.ascontiguousarray(x)
    M, T = x.shape[0], cols.size
    out = cupy.empty((M, T), dtype=x.dtype)
    if M == 0 or T == 0:
        return out
    pack = next(p for p in _packs(x.itemsize) if T % p == 0)
    kernel = compile_kernel(_KERNELS, (x.dtype, pack), lambda: _source(storage_type(x.dtype), pack))
    packs = M * (T // pack)
    kernel((-(-packs // 256),), (256,), (x, np.int64(x.strides[0] // x.itemsize),
                                         cupy.asarray(cols, dtype=cupy.int32), out,
                                         np.int64(M), np.int32(T // pack)))
    return out
