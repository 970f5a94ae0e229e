"""Deployment figures: batch-1 overhead (end to end over the kernel sum), peak GPU memory of
group-wise vs dense, where the time goes (kernel breakdown), and torch.compile.

Sections of the results file (presets: batch1 = overhead and split, deploy = memory and
profile, compile):
  overhead  model x precision, batch 1, group-wise 50% kept, path auto: our CUDA-graph replay and
            eager medians, the sum of our kernel times (CUPTI), PyTorch eager likewise
  split     the same models: one whole call, the graph's replay alone, a queued call's share,
            the host time of each phase of a call and the functions that take it
  memory    model x precision x impl, batch 64: peak bytes of ours (dense model on the dense path,
            50% group-wise model on auto) and of PyTorch eager dense
  profile   model x precision x impl, batch 64: the kernels that take the time
  compile   model x precision, batch 64: torch.compile (default mode) of the dense model
  fused     model x precision, batch 64, group-wise 50%: GEMM epilogues inside cuBLASLt's GEMM
            against GEMM and epilogue kernel apart, beside PyTorch eager dense
"""
import os
import tempfile
import time

import numpy as np

from . import kernels
from .models import (PRESETS, _export, _inputs, _masked_state, _ours_inputs, _torch_forward,
                     _torch_model)
from .precisions import torch_dtype
from .timing import free_gpu_memory, rel_err, time_gpu

MODELS = ("vgg16_bn-cifar10", "resnet18-cifar10", "vit-cifar10", "bert-base-qqp")
PRECISIONS = ("fp32", "fp16")
GROUP_KEEP = 0.5


def _spec(name):
    for specs in PRESETS.values():
        for spec in specs:
            if spec[0] == name:
                return spec
    raise KeyError(name)


class _Case:
    """One model: torch module (masked-dense), exported files (dense, group 50%), inputs."""

    def __init__(self, name, tmp, rng):
        import torch
        _, family, arch, variant, size, classes, batch, _ = _spec(name)
        self.name, self.family, self.batch = name, family, batch
        torch.manual_seed(0)
        self.model, cfg = _torch_model(family, arch, variant, size, classes)
        self.model.eval()
        original = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        masked, export_sd = _masked_state(original, "group", GROUP_KEEP)
        self.files = {}
        for label, sd in (("dense", original), ("group", export_sd)):
            self.files[label] = os.path.join(tmp, f"{name}-{label}.safetensors")
            _export(family, arch, variant, size, classes, sd, cfg, self.files[label], tmp)
        self.dense_state, self.masked_state = original, masked
        self.model.cuda()
        self.inputs = {b: _inputs(family, size, b, cfg, rng) for b in (1, batch)}

    def torch_fn(self, precision, batch, state="masked"):
        dtype = torch_dtype(precision)
        self.model.load_state_dict(self.masked_state if state == "masked" else self.dense_state)
        self.model.to(dtype)
        return _torch_forward(self.model, self.family, self.inputs[batch], dtype)

    def ours(self, label, path_choice, precision, batch, cuda_graph="auto"):
        from cupyprune import load
        model = load(self.files[label], device="gpu", path_choice=path_choice,
                     precision=precision, cuda_graph=cuda_graph)
        x = _ours_inputs(self.family, self.inputs[batch])
        return model, (lambda: model(**x))


def _on_ours(case, label, precision, batch, measure, cuda_graph="auto"):
    """Load our model `label`, return measure(run) with run() one forward pass, then free it."""
    model, run = case.ours(label, "auto", precision, batch, cuda_graph=cuda_graph)
    try:
        return measure(run)
    finally:
        del model, run
        free_gpu_memory()


QUEUED = 20        # calls issued back to back, without waiting, for the host/GPU split


def host_gpu_split(model, run):
    """Where batch-1 time beyond the kernels goes (docs/DESIGN_NOTES.md, "Open"): the captured
    graph's replay alone (events on the graph's own stream: no binding, copies or Python), and one
    call's share of QUEUED whole calls issued without waiting (host work then overlaps the GPU's
    wherever the GPU is the slower). graph_ms, beside them, times one whole call at a time."""
    import cupy
    entry = next(iter(model.graph_runner.captured.values()))
    with entry.stream:
        replay = time_gpu(lambda: entry.graph.launch(entry.stream), warmup=10, repeat=50)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    cupy.cuda.get_current_stream().synchronize()
    start.record()
    for _ in range(QUEUED):
        run()
    end.record()
    end.synchronize()
    return {"replay_ms": replay["median_ms"],
            "queued_ms": cupy.cuda.get_elapsed_time(start, end) / QUEUED}


def host_phases(model, inputs, calls=200, top=8):
    """Host wall-clock of one call's phases, in us (medians; the GPU drained before each, so a
    phase waits only on its own work): binding with the input checks, the graph runner (input
    copies, replay, output copies), the replay's launch alone, the whole call; and cProfile's
    functions with the most own time per call."""
    import cProfile
    import pstats
    import cupy
    sync = cupy.cuda.get_current_stream().synchronize
    entry = next(iter(model.graph_runner.captured.values()))
    env, _ = model._bind((), inputs)
    phases = {"bind": lambda: model._bind((), inputs), "runner": lambda: model.graph_runner(env),
              "launch": lambda: entry.graph.launch(entry.stream), "call": lambda: model(**inputs)}
    out = {}
    for name, fn in phases.items():
        times = []
        for _ in range(calls):
            entry.stream.synchronize()
            sync()
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        out[f"{name}_us"] = float(np.median(times))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        model(**inputs)
    prof.disable()
    stats = pstats.Stats(prof).stats             # (file, line, name) -> (cc, nc, tt, ct, callers)
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    out["host_top"] = [{"function": f"{os.path.basename(f)}:{line}({fn})",
                        "us_per_call": tt / calls * 1e6, "calls_per_call": nc / calls}
                       for (f, line, fn), (cc, nc, tt, ct, callers) in ranked]
    sync()
    return out


def overhead(store, case, precision, progress):
    import torch
    cell = {"model": case.name, "precision": precision, "batch": 1, "keep": GROUP_KEEP}
    if store.has("overhead", cell):
        return
    graphed, run_graph = case.ours("group", "auto", precision, 1)
    cell["graph_ms"] = time_gpu(run_graph, warmup=10, repeat=50)["median_ms"]
    prof = kernels.profile(run_graph, calls=20, top=0)
    cell.update(kernel_sum_ms=prof["kernel_sum_ms"], kernels_per_call=prof["kernels_per_call"])
    del graphed, run_graph
    eager, run_eager = case.ours("group", "auto", precision, 1, cuda_graph=False)
    cell["eager_ms"] = time_gpu(run_eager, warmup=5, repeat=30)["median_ms"]
    del eager, run_eager
    free_gpu_memory()
    fn = case.torch_fn(precision, 1)
    with torch.no_grad():
        cell["torch_eager_ms"] = time_gpu(fn, warmup=5, repeat=30)["median_ms"]
        tprof = kernels.profile(fn, calls=20, top=0)
    cell["torch_kernel_sum_ms"] = tprof["kernel_sum_ms"]
    cell["torch_kernels_per_call"] = tprof["kernels_per_call"]
    case.model.float()
    store.add("overhead", cell)
    progress(f"overhead {case.name} {precision}: graph {cell['graph_ms']:.3f} ms, kernels "
             f"{cell['kernel_sum_ms']:.3f} ms ({cell['kernels_per_call']:.0f}), eager "
             f"{cell['eager_ms']:.3f}, torch {cell['torch_eager_ms']:.3f} ms")


def host_split(store, case, precision, progress):
    """Batch 1, group-wise 50%: one whole call, the graph replay alone, a queued call's share,
    side by side in one process (a section of its own, so that it resumes on its own)."""
    cell = {"model": case.name, "precision": precision, "batch": 1, "keep": GROUP_KEEP}
    if store.has("split", cell):
        return
    model, run = case.ours("group", "auto", precision, 1)
    cell["graph_ms"] = time_gpu(run, warmup=10, repeat=50)["median_ms"]
    cell.update(host_gpu_split(model, run))
    cell.update(host_phases(model, _ours_inputs(case.family, case.inputs[1])))
    del model, run
    free_gpu_memory()
    store.add("split", cell)
    progress(f"split {case.name} {precision}: call {cell['graph_ms']:.3f} ms, replay alone "
             f"{cell['replay_ms']:.3f}, queued {cell['queued_ms']:.3f} ms per call; host us: "
             + ", ".join(f"{k[:-3]} {cell[k]:.0f}" for k in ("bind_us", "runner_us", "launch_us",
                                                            "call_us"))
             + "; top: " + ", ".join(f"{t['function']} {t['us_per_call']:.0f}"
                                     for t in cell["host_top"][:4]))


def memory(store, case, precision, progress):
    """Peak bytes at batch 64 (16 for large shapes): CuPy's pool after a run from an emptied
    pool, plus the graph pools (cupyprune.bench.bench_cell); torch's max_memory_allocated."""
    import torch
    from cupyprune.bench import bench_cell
    for impl, label, path_choice in (("ours-dense", "dense", "dense"),
                                     ("ours-group", "group", "auto")):
        cell = {"model": case.name, "precision": precision, "batch": case.batch, "impl": impl}
        if store.has("memory", cell):
            continue
        free_gpu_memory()
        r = bench_cell(case.files[label], path_choice, precision, case.batch, "gpu",
                       warmup=2, repeat=5)
        cell.update(peak_bytes=r["peak_bytes"], median_ms=r["median_ms"],
                    keep=1.0 if label == "dense" else GROUP_KEEP)
        store.add("memory", cell)
        progress(f"memory {case.name} {precision} {impl}: {cell['peak_bytes'] / 2**20:.0f} MiB")
    cell = {"model": case.name, "precision": precision, "batch": case.batch, "impl": "torch-eager"}
    if not store.has("memory", cell):
        free_gpu_memory()
        fn = case.torch_fn(precision, case.batch, state="dense")
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            fn()
        torch.cuda.synchronize()
        cell.update(peak_bytes=int(torch.cuda.max_memory_allocated()), keep=1.0)
        case.model.float()
        store.add("memory", cell)


def breakdown(store, case, precision, progress):
    import torch
    for impl in ("ours-dense", "ours-group", "torch-eager"):
        cell = {"model": case.name, "precision": precision, "batch": case.batch, "impl": impl}
        if store.has("profile", cell):
            continue
        if impl == "torch-eager":
            fn = case.torch_fn(precision, case.batch, state="dense")
            with torch.no_grad():
                cell.update(kernels.profile(fn, calls=5))
            case.model.float()
        else:
            cell.update(_on_ours(case, impl.split("-")[1], precision, case.batch,
                                 lambda run: kernels.profile(run, calls=5), cuda_graph=False))
        store.add("profile", cell)
        progress(f"profile {case.name} {precision} {impl}: {cell['kernel_sum_ms']:.3f} ms of "
                 f"kernels, {cell['kernels_per_call']:.0f} per call; top "
                 f"{cell['top_kernels'][0]['name'][:50]}")


# torch.compile mode -> the compile cell's fields: compile seconds, median ms, relative error
COMPILE_MODES = ((None, "compile_s", "torch_compile_ms", "compile_rel_err"),
                 ("reduce-overhead", "torch_compile_graphs_s", "torch_compile_graphs_ms",
                  "torch_compile_graphs_rel_err"))


def compiled(store, case, precision, progress):
    """torch.compile of the dense model in its default mode (Inductor, no CUDA graphs) and in
    mode="reduce-overhead" (Inductor kernels replayed from CUDA graphs, as ours are); ours
    group 50% on auto beside them in the same process."""
    import torch
    cell = {"model": case.name, "precision": precision, "batch": case.batch}
    if store.has("compile", cell):
        return
    dtype = torch_dtype(precision)
    fn = case.torch_fn(precision, case.batch, state="masked")
    eager_model = case.model
    with torch.no_grad():
        ref = fn().float().cpu().numpy()
        for mode, seconds, median, err in COMPILE_MODES:
            torch._dynamo.reset()
            t0 = time.time()
            cfn = _torch_forward(torch.compile(eager_model, mode=mode), case.family,
                                 case.inputs[case.batch], dtype)
            y = cfn().float().cpu().numpy()
            cfn()                                    # reduce-overhead records its graph here
            cell[seconds] = time.time() - t0
            cell[median] = time_gpu(cfn, warmup=5, repeat=20)["median_ms"]
            cell[err] = rel_err(y, ref)
            del cfn
        torch._dynamo.reset()
        cell["torch_eager_ms"] = time_gpu(fn, warmup=5, repeat=20)["median_ms"]
    case.model.float()
    cell["ours_group_ms"] = _on_ours(case, "group", precision, case.batch, lambda run: time_gpu(
        run, warmup=5, repeat=20)["median_ms"])
    store.add("compile", cell)
    progress(f"compile {case.name} {precision}: torch.compile {cell['torch_compile_ms']:.3f} ms "
             f"(compiled in {cell['compile_s']:.0f} s), reduce-overhead "
             f"{cell['torch_compile_graphs_ms']:.3f} ms, eager {cell['torch_eager_ms']:.3f}, ours "
             f"group 50% {cell['ours_group_ms']:.3f} ms")


def fused_epilogue(store, case, precision, progress):
    """Batch 64, group-wise 50% on auto: each GEMM's bias, residual and ReLU inside the GEMM
    (cuBLASLt) against the GEMM and our epilogue kernel apart (CUPYPRUNE_CUBLASLT=0), and
    PyTorch eager dense, in one process."""
    import torch
    from cupyprune.gpu.gemm import FUSED_EPILOGUE_ENV
    cell = {"model": case.name, "precision": precision, "batch": case.batch, "keep": GROUP_KEEP}
    if store.has("fused", cell):
        return
    for label, switch in (("fused", "1"), ("apart", "0")):
        os.environ[FUSED_EPILOGUE_ENV] = switch
        try:
            cell[f"{label}_ms"], cell[f"{label}_kernels"] = _on_ours(
                case, "group", precision, case.batch, lambda run: (
                    time_gpu(run, warmup=5, repeat=30)["median_ms"],
                    kernels.profile(run, calls=5, top=0)["kernels_per_call"]))
        finally:
            os.environ.pop(FUSED_EPILOGUE_ENV, None)
    fn = case.torch_fn(precision, case.batch, state="dense")
    with torch.no_grad():
        cell["torch_eager_ms"] = time_gpu(fn, warmup=5, repeat=30)["median_ms"]
    case.model.float()
    store.add("fused", cell)
    progress(f"fused {case.name} {precision}: epilogue in the GEMM {cell['fused_ms']:.3f} ms "
             f"({cell['fused_kernels']:.0f} kernels), apart {cell['apart_ms']:.3f} ms "
             f"({cell['apart_kernels']:.0f}), torch eager dense {cell['torch_eager_ms']:.3f} ms")


STEPS = {"batch1": (overhead, host_split), "deploy": (memory, breakdown),
         "compile": (compiled,), "fused": (fused_epilogue,)}


def run_preset(store, preset, progress=print, max_minutes=9.0, only=None, precisions=PRECISIONS):
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t_end = time.time() + 60 * max_minutes
    rng = np.random.default_rng(0)
    for name in MODELS if only is None else (only,):
        with tempfile.TemporaryDirectory() as tmp:
            case = _Case(name, tmp, rng)
            for precision in precisions:
                for step in STEPS[preset]:
                    if time.time() > t_end:
                        progress("time limit reached; run the preset again to resume")
                        return
                    step(store, case, precision, progress)
            del case
            free_gpu_memory()
