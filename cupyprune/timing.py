"""Timing that is honest about asynchronous devices: CUDA events on the GPU (after warm-up),
the wall clock on the CPU. Returns milliseconds per call."""
import time

import numpy as np


def time_calls(fn, xp, warmup=2, repeat=10):
    """Run fn warmup times, then time `repeat` calls one by one -> list of ms."""
    for _ in range(warmup):
        fn()
    if xp is np:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    start, end = xp.cuda.Event(), xp.cuda.Event()
    xp.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(xp.cuda.get_elapsed_time(start, end))
    return times


def time_queued(fn, cupy, warmup=2, repeat=7, rounds=3):
    """GPU time per call of fn without the host's launch gaps -> list of ms, one per round (the
    mean of `repeat` calls). time_calls brackets one call with CUDA events, so where fn issues
    several kernels with Python between them the GPU idles inside the interval, and a candidate
    of one launch looks faster than one of three even where a CUDA graph, which replays them
    without gaps, runs the three faster. Here each round queues its calls behind a spinning
    kernel (gpu/spin.py) that lasts twice the host's time to issue them, so they run back to
    back. A fn that waits for the GPU itself gets its gaps back; that time is real in use too."""
    from .gpu.spin import spin
    for _ in range(warmup):
        fn()
    stream = cupy.cuda.get_current_stream()
    stream.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    issue_s = time.perf_counter() - t0
    stream.synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(rounds):
        spin(2 * issue_s + 5e-4)
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / repeat)
    return times


def summary(times):
    """ms list -> dict of median, p10, p90, min."""
    a = np.asarray(times, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()), "runs": int(a.size)}
