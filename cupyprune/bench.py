"""Timing model files: one cell per (model, path, precision, batch), framework-free.

GPU: medians of CUDA-event timings after warm-up; CPU: wall clock. Peak GPU memory is the size
of CuPy's pool after a run that started from an emptied pool, plus the private pools of the
model's captured CUDA graphs: together they hold every block the load and the forward asked for,
so they are the high-water mark of this process's allocations for the model."""
import os
import platform

import numpy as np

from . import __version__, backend
from .engine import load
from .inputs import sample_inputs
from .timing import summary, time_calls

SCHEMA = "cupyprune.bench/1"
CELL_KEYS = ("model", "path", "precision", "batch", "device", "cuda_graph", "median_ms", "p10_ms",
             "p90_ms", "min_ms", "runs", "peak_bytes", "paths_used")


def environment(device):
    env = {"cupyprune": __version__, "numpy": np.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "device": device}
    if device == "gpu":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        env.update(cupy=cupy.__version__, gpu=props["name"].decode(),
                   cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    return env


def _free_pool(xp):
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()


def graph_bytes(model):
    """Bytes held by the private memory pools of a model's captured CUDA graphs."""
    runner = model.graph_runner
    if runner is None:
        return 0
    return sum(int(entry.pool.total_bytes()) for entry in runner.captured.values())


def peak_bytes(model):
    """GPU bytes held for a model since the default pool was last emptied: that pool (its
    weights, and what its calls outside a graph allocated) plus its graphs' private pools."""
    import cupy
    return int(cupy.get_default_memory_pool().total_bytes()) + graph_bytes(model)


def bench_cell(model_path, path_choice, precision, batch, device, warmup, repeat,
               cuda_graph="auto"):
    """Load one model file, time it on synthetic inputs -> a result dict (CELL_KEYS)."""
    device = backend.resolve_device(device)
    xp = backend.array_module(device)
    _free_pool(xp)
    model = load(model_path, device=device, path_choice=path_choice, precision=precision,
                 cuda_graph=cuda_graph)
    inputs = {k: xp.asarray(v) for k, v in sample_inputs(model.file.input_spec, batch).items()}
    times = time_calls(lambda: model(**inputs), xp, warmup=warmup, repeat=repeat)
    peak = peak_bytes(model) if xp is not np else None
    used = sorted({s.op.describe()["path"] for s in model.layers()})
    cell = {"model": os.path.basename(model_path), "path": path_choice, "precision": precision,
            "batch": batch, "device": device, "cuda_graph": model.graph_runner is not None,
            "peak_bytes": peak, "paths_used": used}
    cell.update(summary(times))
    del model
    _free_pool(xp)
    return cell
