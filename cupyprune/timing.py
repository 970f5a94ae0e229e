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


def summary(times):
    """ms list -> dict of median, p10, p90, min."""
    a = np.asarray(times, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()), "runs": int(a.size)}
