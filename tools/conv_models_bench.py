"""ImageNet-size CNNs, group-wise pruned, fp16: ours with and without the implicit-GEMM conv,
against the same dense weights in PyTorch (the targets of the implicit conv's design note).

    python tools/conv_models_bench.py --out bench/results/h100/conv-models.json
        [--models resnet18@224x32,vgg16_bn@64x64] [--keeps 0.5,0.25] [--batch1]
        [--compile-mode max-autotune | --no-compile] [--max-minutes 9]

Per model (torchvision's builder, 1000 classes, random weights and batch-norm statistics as
tools/export_zoo.py draws them, seed 0) and kept fraction, files written by the generic exporter
(cupyprune.export) from the module pruned with prune_module(model, "group", keep), plus the
unpruned file. Rows:
  torch-graph     the dense model, fp16, channels_last, eager forward replayed from a CUDA graph
  torch-compile   torch.compile(dense model, mode=--compile-mode), fp16, channels_last
                  (max-autotune replays Inductor's kernels from CUDA graphs too); compile_s
  ours/off        our file, fp16, CUDA graph, convs by im2col + cuBLAS (CUPYPRUNE_IMPLICIT_CONV=off)
  ours/auto       the same with the implicit-GEMM conv among the timed candidates (=auto);
                  first_call_s with an empty tile cache and again with the filled one
peak_mib: the GPU memory our last load holds after its calls, as `cupyprune bench` counts it
(cupyprune.bench.peak_bytes: the default pool, emptied before the load, and the CUDA graphs'
private pools): with the tile cache filled, what the deployed model needs.
Every time is the median of 30 CUDA-event timings of one whole call (after warm-up), ours and
PyTorch's in one process on one GPU. rel_err: ours against PyTorch's float32 forward (TF32
off) of the same (pruned) module on the same input; argmax_agree likewise. The results file is
rewritten after each model, so a run cut by --max-minutes keeps what it measured.
Needs a CUDA GPU, CuPy, torch and torchvision.
"""
import copy
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, ResultRows, UsageError, gpu_or_say, parse_or_exit,  # noqa: E402
                     parse_with_out, positive_float, run_tool)

ARCHS = ("resnet18", "resnet50", "vgg16_bn", "vgg16")
DEFAULT_MODELS = "resnet18@224x32,vgg16_bn@224x32,resnet18@64x64,vgg16_bn@64x64"
REPEAT, WARMUP = 30, 5


def _model_spec(text):
    """'resnet18@224x32' -> ('resnet18', 224, 32)."""
    try:
        arch, rest = text.split("@")
        size, batch = (int(v) for v in rest.split("x"))
    except ValueError:
        raise UsageError(f"--models: {text!r} is not ARCH@SIZExBATCH (e.g. resnet18@224x32)")
    if arch not in ARCHS:
        raise UsageError(f"--models: unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    if size < 32 or batch < 1:
        raise UsageError(f"--models: {text!r} needs a size of at least 32 and a batch of 1 or more")
    return arch, size, batch


def _keeps(text):
    try:
        keeps = [float(v) for v in text.split(",")]
    except ValueError:
        keeps = []
    if not keeps or not all(0 < k < 1 for k in keeps):
        raise UsageError(f"--keeps: {text!r} is not a list of fractions in (0, 1)")
    return keeps


def parse_args(argv):
    ap = OneLineParser(prog="tools/conv_models_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="results JSON (a list of rows)")
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help=f"comma-separated ARCH@SIZExBATCH (default {DEFAULT_MODELS})")
    ap.add_argument("--keeps", default="0.5,0.25", help="kept fractions (default 0.5,0.25)")
    ap.add_argument("--batch1", action="store_true", help="also time every model at batch 1")
    ap.add_argument("--compile-mode", default="max-autotune",
                    help="torch.compile mode of the baseline (default max-autotune)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--max-minutes", type=positive_float, default=9.0,
                    help="start no new model after this long (default 9)")
    args = parse_with_out(ap, argv)
    args.models = [_model_spec(m) for m in args.models.split(",")]
    args.keeps = _keeps(args.keeps)
    return args


def _events_median(torch, fn):
    """Median ms of REPEAT CUDA-event timings of fn() after WARMUP calls."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPEAT):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": round(float(np.median(times)), 4),
            "p10_ms": round(float(np.percentile(times, 10)), 4),
            "p90_ms": round(float(np.percentile(times, 90)), 4)}


def _agreement(y, ref):
    y = np.asarray(y, dtype=np.float64).reshape(ref.shape)
    return {"rel_err": float(np.abs(y - ref).max() / np.abs(ref).max()),
            "argmax_agree": float((y.argmax(-1) == ref.argmax(-1)).mean())}


def _reference(torch, module, x):
    """float32 forward on the GPU with TF32 off -> float64 host logits."""
    module = copy.deepcopy(module).cuda().float()
    with torch.no_grad():
        return module(x.cuda().float()).double().cpu().numpy()


def torch_rows(torch, dense, x, batch, args, base, rows):
    """The dense model's baselines: eager fp16 from a CUDA graph, and torch.compile."""
    from benchlib.timing import torch_graphed
    model = copy.deepcopy(dense).cuda().half().to(memory_format=torch.channels_last)
    xh = x.cuda().half().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        replay = torch_graphed(torch, lambda: model(xh))
        rows.add({**base, "impl": "torch-graph", "keep": 1.0, **_events_median(torch, replay)})
        if args.no_compile:
            return
        torch._dynamo.reset()
        compiled = torch.compile(model, mode=args.compile_mode, dynamic=False)
        start = time.perf_counter()
        for _ in range(3):                       # compile, then record the CUDA graph
            compiled(xh)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        rows.add({**base, "impl": "torch-compile", "mode": args.compile_mode, "keep": 1.0,
                  "compile_s": round(compile_s, 1), **_events_median(torch, lambda: compiled(xh))})


def ours_rows(torch, path, keep, x, ref, base, rows, tune_dir):
    """Our file at `path`, implicit conv off and auto; tile choices timed into tune_dir."""
    import cupy
    from cupyprune import load
    from cupyprune.bench import peak_bytes
    from cupyprune.ops import conv_implicit, tune_cache
    os.environ[tune_cache.CACHE_ENV] = tune_dir
    xc = cupy.asarray(x.numpy())
    pool = cupy.get_default_memory_pool()
    for mode in ("off", "auto"):
        os.environ[conv_implicit.MODE_ENV] = mode
        row = {**base, "impl": f"ours/{mode}", "keep": keep}
        for attempt in ("first_call_s", "cached_first_call_s")[:1 + (mode == "auto")]:
            model = y = None
            pool.free_all_blocks()               # the pool's high water is this load's peak
            model = load(path, device="gpu", precision="fp16")
            start = time.perf_counter()
            y = model(xc)                        # warm-up: candidates timed, graph captured
            cupy.cuda.Device().synchronize()
            row[attempt] = round(time.perf_counter() - start, 2)
        row.update(_agreement(cupy.asnumpy(y), ref))
        row.update(_events_median(torch, lambda: model(xc)))
        row["cuda_graph"] = model.graph_runner is not None and model.graph_runner.failed is None
        row["conv_kernels"] = _conv_choices(model)
        row["peak_mib"] = round(peak_bytes(model) / 2 ** 20, 1)           # of the last load
        rows.add(row)
        model = y = None
        pool.free_all_blocks()


def _conv_choices(model):
    """{choice: how many conv layers made it} over the model's implicit-capable convs."""
    counts = {}
    for step in model.layers():
        implicit = getattr(step.op, "implicit", None)
        if implicit is None:
            continue
        for chosen in implicit.choice.values():
            name = "im2col" if chosen is None else f"implicit/{chosen[0]}/{chosen[1].name}"
            counts[name] = counts.get(name, 0) + 1
    return counts


def bench_model(torch, spec, args, rows, tmp, progress):
    from cupyprune.export import export_module, prune_module
    from cupyprune.export.trace import strip_pruning
    from export_zoo import torchvision_model
    arch, size, batch = spec
    dense = torchvision_model(arch, seed=0)
    example = torch.randn(1, 3, size, size)
    files = {1.0: os.path.join(tmp, f"{arch}-{size}-dense.safetensors")}
    export_module(dense, example, files[1.0], verify=False)
    modules = {1.0: dense}
    for keep in args.keeps:
        pruned = copy.deepcopy(dense)
        prune_module(pruned, "group", keep)
        files[keep] = os.path.join(tmp, f"{arch}-{size}-group{keep}.safetensors")
        export_module(pruned, example, files[keep], verify=False)
        modules[keep] = strip_pruning(pruned)[0]      # masks multiplied in: plain parameters
    for b in (batch, 1) if args.batch1 and batch != 1 else (batch,):
        base = {"model": arch, "image": size, "batch": b, "precision": "fp16"}
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b))
        torch_rows(torch, dense, x, b, args, base, rows)
        for keep, path in files.items():
            ref = _reference(torch, modules[keep], x)
            ours_rows(torch, path, keep, x, ref, base, rows,
                      os.path.join(tmp, f"tune-{arch}-{size}"))
        progress(_summary(rows.rows, base))
        rows.write(args.out)


def _summary(rows, base):
    """One line: each of ours/auto's kept fractions against the dense baselines."""
    mine = [r for r in rows if all(r.get(k) == v for k, v in base.items())]
    by = {(r["impl"], r["keep"]): r["median_ms"] for r in mine}
    graph, compiled = by.get(("torch-graph", 1.0)), by.get(("torch-compile", 1.0))
    parts = [f"{base['model']}@{base['image']}x{base['batch']}: torch graph {graph:.3f} ms"]
    if compiled:
        parts.append(f"compile {compiled:.3f}")
    for (impl, keep), ms in sorted(by.items()):
        if impl.startswith("ours"):
            vs = f"{graph / ms:.2f}x graph" + (f", {compiled / ms:.2f}x compile" if compiled
                                               else "")
            parts.append(f"{impl} {keep:.2f} {ms:.3f} ({vs})")
    return "; ".join(parts)


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("conv_models_bench"):
        return 2
    from cupyprune.export.torchlib import import_torch
    torch = import_torch()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    import cupy
    rows = ResultRows()
    rows.add({"impl": "environment", "gpu": torch.cuda.get_device_name(), "torch":
              torch.__version__, "cudnn": torch.backends.cudnn.version(), "cupy": cupy.__version__,
              "command": " ".join(["python tools/conv_models_bench.py"] + sys.argv[1:])})
    deadline = time.monotonic() + 60 * args.max_minutes
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            if time.monotonic() > deadline:
                summary.append(f"{spec[0]}@{spec[1]}x{spec[2]}: not run (--max-minutes)")
                continue
            bench_model(torch, spec, args, rows, tmp, summary.append)
            print(summary[-1], flush=True)
    rows.write(args.out)
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
