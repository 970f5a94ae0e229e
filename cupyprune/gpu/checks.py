"""Input checks on device arrays: one small kernel per array, their counts copied to pinned host
memory behind them, and no host sync until the caller asks for the result (CuPy's generic ops
took four launches and a sync per array: two compares, an or, an any). The caller queues the
forward pass first, so the GPU never waits for the host's look at the counts."""
import numpy as np

from .cuda_source import compile_kernel

_KERNELS = {}
_INT_TYPES = {np.dtype(t): c for t, c in (
    (np.int8, "signed char"), (np.uint8, "unsigned char"), (np.int16, "short"),
    (np.uint16, "unsigned short"), (np.int32, "int"), (np.uint32, "unsigned int"),
    (np.int64, "long long"), (np.uint64, "unsigned long long"))}

_COUNT_OUTSIDE = r"""
// counts[slot] += how many of ids[0, n) lie outside [0, limit) (atomics only for bad ids; an
// unsigned id above 2**63 turns negative in the cast and counts as outside, as it is)
extern "C" __global__ void %(name)s(const %(T)s* ids, long long n, long long limit,
                                    unsigned long long* counts, int slot) {
    unsigned long long outside = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long v = (long long)ids[i];
        outside += (v < 0 || v >= limit);
    }
    if (outside) atomicAdd(counts + slot, outside);
}
"""


def _source(T):
    name = "cupyprune_count_outside_" + T.replace(" ", "_")
    return name, _COUNT_OUTSIDE % {"T": T, "name": name}


def kernel_sources():
    """(name, CUDA source) of every kernel this module can compile (for an NVRTC check)."""
    for T in _INT_TYPES.values():
        yield _source(T)


class PendingCounts:
    """Counts being copied to the host on the current stream; `result()` waits for them only."""

    def __init__(self, counts, stream):
        import cupy
        from cupy.cuda import runtime
        self._device = counts                    # alive until the copy has run
        self._pinned = cupy.cuda.alloc_pinned_memory(counts.nbytes)
        runtime.memcpyAsync(self._pinned.ptr, counts.data.ptr, counts.nbytes,
                            runtime.memcpyDeviceToHost, stream.ptr)
        self._copied = cupy.cuda.Event(disable_timing=True)
        self._copied.record(stream)

    def result(self):
        self._copied.synchronize()
        host = np.frombuffer(self._pinned, dtype=np.uint64, count=self._device.size)
        return [int(c) for c in host]


def start_count_outside(arrays, limits):
    """[integer CuPy arrays], [limits] -> PendingCounts: how many ids of each lie outside
    [0, limit), once `result()` is called. Runtime calls rather than CuPy's helpers where they
    do the same: at batch 1 this host work is on the critical path."""
    import cupy
    from cupy.cuda import runtime
    stream = cupy.cuda.get_current_stream()
    counts = cupy.empty(len(arrays), dtype=cupy.uint64)
    runtime.memsetAsync(counts.data.ptr, 0, counts.nbytes, stream.ptr)
    for slot, (ids, limit) in enumerate(zip(arrays, limits)):
        if not ids.flags.c_contiguous:
            ids = cupy.ascontiguousarray(ids)
        T = _INT_TYPES[ids.dtype]
        kernel = compile_kernel(_KERNELS, T, lambda: _source(T))
        blocks = max(1, min(-(-ids.size // 256), 1024))
        kernel((blocks,), (256,), (ids, np.int64(ids.size), np.int64(limit), counts,
                                   np.int32(slot)))
    return PendingCounts(counts, stream)


def count_outside(arrays, limits):
    """[integer CuPy arrays], [limits] -> [how many ids of each lie outside [0, limit)] (waits)."""
    return start_count_outside(arrays, limits).result()
