"""Input checks on device arrays: one small kernel per array, their counts copied to pinned host
memory behind them, and no host sync until the caller asks for the result (CuPy's generic ops
took four launches and a sync per array: two compares, an or, an any). The engine queues them
beside the forward pass, after its graph's launch, so neither the GPU nor the replay waits for
the host's work on them."""
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


# buffers of finished checks by (device, array count), reused: at batch 1 making a device
# buffer, a pinned one and an event per call was host time on the critical path
_SPARE = {}


def _buffers(key):
    """(device counts, pinned host memory, event) for key = (device, n): a spare set, or new."""
    spare = _SPARE.get(key)
    if spare:
        try:
            return spare.pop()
        except IndexError:                  # another thread took the last one
            pass
    import cupy
    n = key[1]
    return (key, cupy.empty(n, dtype=cupy.uint64), cupy.cuda.alloc_pinned_memory(8 * n),
            cupy.cuda.Event(disable_timing=True))


class PendingCounts:
    """Counts being copied to the host on `stream`; `result()` waits for them only."""

    def __init__(self, buffers, stream):
        from cupy.cuda import runtime
        self._buffers = buffers
        _, counts, pinned, copied = buffers
        runtime.memcpyAsync(pinned.ptr, counts.data.ptr, counts.nbytes,
                            runtime.memcpyDeviceToHost, stream.ptr)
        copied.record(stream)

    def result(self):
        key, counts, pinned, copied = self._buffers
        copied.synchronize()
        found = [int(c) for c in np.frombuffer(pinned, dtype=np.uint64, count=counts.size)]
        _SPARE.setdefault(key, []).append(self._buffers)
        self._buffers = None                # a second result() would read a reused buffer
        return found


_SIDE_STREAMS = {}


def _side_stream(device):
    """One non-blocking stream per device for checks queued beside a forward pass."""
    import cupy
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = cupy.cuda.Stream(non_blocking=True)
    return _SIDE_STREAMS[device]


def start_count_outside(arrays, limits, ready=None):
    """[integer CuPy arrays], [limits] -> PendingCounts: how many ids of each lie outside
    [0, limit), once `result()` is called (once). Runtime calls rather than CuPy's helpers
    where they do the same: at batch 1 this host work is on the critical path.

    ready: None to count on the current stream; or a CUDA event recorded where the arrays are
    ready, to count on a side stream that waits for that event only. The engine passes one
    after it has launched the forward's graph, so this host work overlaps the replay and the
    counts do not wait for it."""
    import cupy
    from cupy.cuda import runtime
    device = runtime.getDevice()
    stream = cupy.cuda.get_current_stream()
    if ready is not None:
        stream = _side_stream(device)
        stream.wait_event(ready)
    buffers = _buffers((device, len(arrays)))
    counts = buffers[1]
    with stream:
        runtime.memsetAsync(counts.data.ptr, 0, counts.nbytes, stream.ptr)
        for slot, (ids, limit) in enumerate(zip(arrays, limits)):
            if not ids.flags.c_contiguous:
                ids = cupy.ascontiguousarray(ids)
            T = _INT_TYPES[ids.dtype]
            kernel = compile_kernel(_KERNELS, T, lambda: _source(T))
            blocks = max(1, min(-(-ids.size // 256), 1024))
            kernel((blocks,), (256,), (ids, np.int64(ids.size), np.int64(limit), counts,
                                       np.int32(slot)))
        return PendingCounts(buffers, stream)


def count_outside(arrays, limits):
    """[integer CuPy arrays], [limits] -> [how many ids of each lie outside [0, limit)] (waits)."""
    return start_count_outside(arrays, limits).result()
