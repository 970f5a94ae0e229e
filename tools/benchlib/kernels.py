"""GPU kernel times of any code in this process, CuPy's included, through torch.profiler (CUPTI).

CUPTI sees every kernel the process launches, whoever launches it (CuPy, cuBLAS, torch) and
however (eagerly or from a CUDA graph), so the sum of kernel durations is the GPU's busy time
without any launch gap: the denominator of the batch-1 overhead goal."""
import json
import os
import tempfile
from collections import defaultdict

DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def device_events(trace):
    """A chrome trace (dict) -> [(category, name, duration in us)] of its device activities."""
    events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    return [(e["cat"], e.get("name", "?"), float(e.get("dur", 0.0))) for e in events
            if e.get("ph") == "X" and e.get("cat") in DEVICE_CATEGORIES]


def summarize(events, calls, top=12):
    """Device events of `calls` calls -> per-call totals and the `top` kernels by time."""
    by_name = defaultdict(lambda: [0.0, 0])
    for _, name, dur in events:
        by_name[name][0] += dur
        by_name[name][1] += 1
    busy_us = sum(d for _, _, d in events)
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    return {"kernel_sum_ms": busy_us / 1e3 / calls,
            "kernels_per_call": len(events) / calls,
            "top_kernels": [{"name": name[:120], "ms_per_call": t / 1e3 / calls,
                             "count_per_call": n / calls} for name, (t, n) in ranked[:top]]}


def profile(fn, calls=10, top=12):
    """Run fn() `calls` times under the profiler (after one untraced call) -> summarize()."""
    import torch
    from torch.profiler import ProfilerActivity
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    return summarize(device_events(trace), calls, top)
