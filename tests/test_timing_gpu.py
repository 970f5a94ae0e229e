"""On the GPU: timing.time_queued measures the GPU time of the calls, not the host's launch
gaps between their kernels (which time_calls' one-call event bracket counts), so the runtime's
per-layer choices rank candidates as a CUDA-graph replay would run them."""
import time

import pytest

from cupyprune.timing import summary, time_calls, time_queued

pytestmark = pytest.mark.gpu
GAP_S = 0.002                    # host time between the two kernels of one call


def test_host_gaps_between_kernels_are_not_timed():
    import cupy
    x = cupy.random.standard_normal(1 << 16, dtype=cupy.float32)

    def two_kernels_with_a_gap():
        cupy.multiply(x, 2.0, out=x)
        time.sleep(GAP_S)                          # Python between two launches
        cupy.multiply(x, 0.5, out=x)

    bracketed = summary(time_calls(two_kernels_with_a_gap, cupy, warmup=2, repeat=5))
    queued = summary(time_queued(two_kernels_with_a_gap, cupy, warmup=2, repeat=5))
    assert bracketed["median_ms"] >= 1e3 * GAP_S              # the gap is inside the bracket
    assert queued["median_ms"] < 0.2 * 1e3 * GAP_S, queued     # two small kernels: microseconds


def test_gpu_bound_calls_time_the_same_either_way():
    import cupy
    a = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)
    bracketed = summary(time_calls(lambda: a @ a, cupy, warmup=2, repeat=7))["median_ms"]
    queued = summary(time_queued(lambda: a @ a, cupy, warmup=2, repeat=7))["median_ms"]
    assert 0.7 < queued / bracketed < 1.3, (queued, bracketed)


def test_the_spin_lasts_at_least_what_it_is_asked():
    import cupy

    from cupyprune.gpu.spin import spin
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    spin(0.001)                                            # compiled and loaded first
    start.record()
    spin(0.003)
    end.record()
    end.synchronize()
    assert cupy.cuda.get_elapsed_time(start, end) >= 2.9
