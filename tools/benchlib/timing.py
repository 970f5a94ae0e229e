"""GPU timing for the paper benchmark: CUDA-event medians after warm-up, and graph capture of a
single callable (so a layer is timed without Python launch gaps when asked)."""
import numpy as np

from cupyprune.timing import summary, time_calls


def time_gpu(fn, warmup=5, repeat=20):
    import cupy
    return summary(time_calls(fn, cupy, warmup=warmup, repeat=repeat))


def captured(fn):
    """fn() -> a callable that replays fn's kernels from one CUDA graph (fn must be capturable;
    its allocations come from a private pool kept alive with the graph)."""
    import cupy
    from cupyprune.gpu.graph import capture_stream
    stream = capture_stream()
    pool = cupy.cuda.MemoryPool()
    with cupy.cuda.using_allocator(pool.malloc), stream:
        fn()
        stream.synchronize()
        stream.begin_capture()
        try:
            fn()
        finally:
            graph = stream.end_capture()
    current = cupy.cuda.get_current_stream()

    def replay():
        graph.launch(current)

    def release():
        """Free the graph's private memory now (a sweep captures many graphs)."""
        nonlocal graph
        current.synchronize()
        graph = None
        pool.free_all_blocks()
    replay.release = release
    replay.stream = stream
    return replay


def torch_graphed(torch, fn):
    """fn's torch kernels captured in one torch CUDA graph (after three warm-up calls on a side
    stream, as torch.cuda.graph asks) -> the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def free_gpu_memory():
    """Return cached blocks of CuPy's and torch's allocators between cells."""
    import gc

    import cupy
    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()
    try:
        import torch
        torch.cuda.empty_cache()
    except ImportError:
        pass


def rel_err(out, ref):
    """max|out - ref| / max|ref| on host float64."""
    import cupy
    out = cupy.asnumpy(out).astype(np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    return float(np.abs(out - ref).max() / np.abs(ref).max())
