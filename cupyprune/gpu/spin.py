"""A kernel that keeps the GPU busy for a given time. Timing queues the calls it measures
behind it (timing.time_queued): while the GPU spins, the host issues every call, so the calls'
kernels then run back to back, as a CUDA-graph replay runs them, and the launch gaps of the
host's Python between them stay out of the measurement."""
import numpy as np

from .cuda_source import compile_kernel

_SOURCE = r"""
extern "C" __global__ void cupyprune_spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
"""
_KERNELS = {}
MAX_SECONDS = 0.05


def kernel_sources():
    yield "cupyprune_spin", _SOURCE


def spin(seconds):
    """Queue, on the current stream, one thread that returns after `seconds` (at most
    MAX_SECONDS) of the GPU's global timer."""
    kernel = compile_kernel(_KERNELS, "spin", lambda: ("cupyprune_spin", _SOURCE))
    ns = int(1e9 * min(max(seconds, 0.0), MAX_SECONDS))
    kernel((1,), (1,), (np.uint64(ns),))
