"""The implicit-GEMM conv kernels (cupyprune/gpu/implicit_conv.py, implicit_conv_wgmma.py)
beside im2col + cuBLAS and cuDNN.

    python tools/implicit_conv_bench.py --out bench/results/h100/implicit-conv.json
    python tools/implicit_conv_bench.py --out conv512.json --layers conv512
    python tools/implicit_conv_bench.py --out conv512-tf32.json --layers conv512 --precision tf32

Layers: the paper's conv (512->512, 3x3, 28x28, batch 64) at 100/75/50/25% of its rows kept
(random group-wise masks, as tools/benchlib/layers.py draws them), and ResNet-18's conv
shapes at 224x224, batch 32, at 100/50/25% (the stem at 100% only: it is never pruned). fp16
by default; --precision bf16, or tf32 (fp32 values, the wgmma kernel's TF32 products).
Per layer and kept fraction, one row per implementation:
  implicit  our kernels: each distinct row plan ('kept'; 'half' and 'dense' for a pruned
            layer) x tile config (names starting with 'wg': the wgmma kernel, on sm_90; its
            wide tiles, x64, on the all-vector plans only)
  im2col    our im2col of the kept taps + cuBLAS (the runtime's path without the kernel)
  auto      what the runtime's own timing picks (ops/conv_implicit.py)
  cudnn     torch.nn.functional.conv2d of the dense layer in the same precision (tf32: fp32
            with cudnn.allow_tf32), channels_last, cudnn.benchmark on
Medians of 30 CUDA-event timings after 5 warm-up calls, each call replayed from a CUDA graph
(ours: benchlib.timing.captured; cuDNN: torch.cuda.CUDAGraph), so no figure holds Python's
launch time; eager medians beside them (eager_ms). Activations are random, never zeros.
tflops counts the kept work (2 * M * kept rows * K); peak_fraction divides it by the H100's
dense tensor peak of the precision (fp16/bf16 989, TF32 494.7 TFLOP/s). rel_err: against
torch's float32 conv (TF32 off) of the same rounded inputs and masked weight.
Needs a CUDA GPU, CuPy and torch.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, ResultRows, UsageError, gpu_or_say, parse_or_exit,  # noqa: E402
                     parse_with_out, run_tool)

PEAK_TFLOPS = {"fp16": 989.0, "bf16": 989.0, "tf32": 494.7}   # H100 SXM dense tensor peaks
PAPER = [("conv512", 64, 512, 512, 3, 1, 1, 28, (1.0, 0.75, 0.5, 0.25))]
# ResNet-18 at 224x224, batch 32: (name, N, C, K, kernel, stride, padding, H, keeps)
RESNET18 = [("r18.conv1", 32, 3, 64, 7, 2, 3, 224, (1.0,)),
            ("r18.l1", 32, 64, 64, 3, 1, 1, 56, (1.0, 0.5, 0.25)),
            ("r18.l2.0", 32, 64, 128, 3, 2, 1, 56, (1.0, 0.5, 0.25)),
            ("r18.l2.ds", 32, 64, 128, 1, 2, 0, 56, (1.0, 0.5, 0.25)),
            ("r18.l2", 32, 128, 128, 3, 1, 1, 28, (1.0, 0.5, 0.25)),
            ("r18.l3.0", 32, 128, 256, 3, 2, 1, 28, (1.0, 0.5, 0.25)),
            ("r18.l3.ds", 32, 128, 256, 1, 2, 0, 28, (1.0, 0.5, 0.25)),
            ("r18.l3", 32, 256, 256, 3, 1, 1, 14, (1.0, 0.5, 0.25)),
            ("r18.l4.0", 32, 256, 512, 3, 2, 1, 14, (1.0, 0.5, 0.25)),
            ("r18.l4.ds", 32, 256, 512, 1, 2, 0, 14, (1.0, 0.5, 0.25)),
            ("r18.l4", 32, 512, 512, 3, 1, 1, 7, (1.0, 0.5, 0.25))]

LAYER_NAMES = tuple(spec[0] for spec in PAPER + RESNET18)


def parse_args(argv):
    ap = OneLineParser(prog="tools/implicit_conv_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="results JSON, a list of rows (written once every layer is "
                                  "timed)")
    ap.add_argument("--layers", default="", help="comma-separated layer names to time (default: "
                    "all: " + ",".join(LAYER_NAMES) + ")")
    ap.add_argument("--precision", default="fp16", choices=sorted(PEAK_TFLOPS),
                    help="the layers' precision (default fp16)")
    args = parse_with_out(ap, argv)
    args.layers = [n for n in args.layers.split(",") if n] or list(LAYER_NAMES)
    unknown = sorted(set(args.layers) - set(LAYER_NAMES))
    if unknown:
        raise UsageError(f"unknown layer {unknown[0]!r}; known: {', '.join(LAYER_NAMES)}")
    return args


def _timed(cupy, fn, replay):
    """fn eagerly, then replay() (fn's kernels from a CUDA graph) -> the timing fields."""
    from cupyprune.timing import summary, time_calls
    eager = summary(time_calls(fn, cupy, warmup=5, repeat=30))
    s = summary(time_calls(replay, cupy, warmup=5, repeat=30))
    return {"median_ms": round(s["median_ms"], 5), "p10_ms": round(s["p10_ms"], 5),
            "p90_ms": round(s["p90_ms"], 5), "eager_ms": round(eager["median_ms"], 5)}


def _ours_timed(cupy, fn):
    from benchlib.timing import captured
    replay = captured(fn)
    try:
        return _timed(cupy, fn, replay)
    finally:
        replay.release()


def _torch_timed(cupy, torch, fn):
    from benchlib.timing import torch_graphed
    return _timed(cupy, fn, torch_graphed(torch, fn))


def _rel_err(cupy, y, ref):
    from cupyprune import bf16
    y = bf16.from_bits(y) if y.dtype == cupy.uint16 else y       # bf16 outputs are their bits
    y = cupy.asarray(y, dtype=cupy.float32).reshape(ref.shape)
    return float(cupy.abs(y - ref).max() / cupy.abs(ref).max())


def _activation(cupy, torch, shape, precision):
    """Random (N, H, W, C) activation in the run's storage, and torch's NCHW channels_last view
    of the same values in the reference conv's dtype."""
    from cupyprune import bf16
    x = cupy.random.standard_normal(shape, dtype=cupy.float32)
    if precision == "bf16":
        bits = bf16.to_bits(x)
        xt = torch.as_tensor(bits, device="cuda").view(torch.bfloat16)
        return bits, xt.permute(0, 3, 1, 2)
    x = x.astype(cupy.float16) if precision == "fp16" else x
    return x, torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2)


def bench_layer(cupy, torch, rows, tmp, spec, precision, progress):
    import torch.nn.functional as F
    from benchlib.layers import _group_mask, _layer_file
    from cupyprune import load
    from cupyprune.ops import conv_implicit
    from cupyprune.ops.im2col import out_size
    name, N, C, K, k, s, p, H, keeps = spec
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    OH = out_size(H, k, s, p, 1)
    M = N * OH * OH
    x, xt = _activation(cupy, torch, (N, H, H, C), precision)      # xt: NCHW view, channels_last
    attrs = {"stride": [s, s], "padding": [p, p], "dilation": [1, 1]}
    wt_dense = torch.from_numpy(w).cuda().to(xt.dtype).contiguous(
        memory_format=torch.channels_last)
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    cudnn = _torch_timed(cupy, torch, lambda: F.conv2d(xt, wt_dense, stride=s, padding=p))
    torch.backends.cudnn.allow_tf32 = False                  # the reference below: exact fp32
    peak = PEAK_TFLOPS[precision]
    base = {"layer": name, "N": N, "C": C, "K": K, "kernel": k, "stride": s, "H": H,
            "precision": precision}
    cudnn_tflops = 2 * M * K * C * k * k / cudnn["median_ms"] / 1e9
    rows.add({**base, "impl": "cudnn", "keep": 1.0, "tflops": round(cudnn_tflops, 1),
              "peak_fraction": round(cudnn_tflops / peak, 4), **cudnn})
    for keep in keeps:
        mask = _group_mask(rng, w.shape, keep) if keep < 1 else np.ones_like(w)
        path = _layer_file(tmp, "conv2d", w, mask, attrs)
        op = load(path, device="gpu", precision=precision, cuda_graph=False).steps[0].op
        wm = torch.from_numpy(w * mask).cuda()
        ref = cupy.asarray(F.conv2d(xt.float(), wm, stride=s, padding=p)
                           .permute(0, 2, 3, 1).reshape(M, K))
        kept = int(mask.reshape(K, -1)[0].sum())
        flops = 2.0 * M * kept * K
        cells = {"im2col": lambda: op.epilogue.after(op.path, op._columns(x), None)}
        for plan in op.implicit.plan_names:
            for config in conv_implicit.tiles(precision):
                if not op.implicit.fits(x.shape, M, plan, config):    # wide tiles: all-vector
                    continue                                          # plans only
                cells[f"implicit/{plan}/{config.name}"] = (
                    lambda plan=plan, config=config: op.implicit.run(x, None, (OH, OH), plan,
                                                                     config))
        best = {}
        for impl, fn in cells.items():
            row = {**base, "impl": impl, "keep": keep, "kept_rows": kept,
                   "rel_err": _rel_err(cupy, fn(), ref), **_ours_timed(cupy, fn)}
            row["tflops"] = round(flops / row["median_ms"] / 1e9, 1)
            row["peak_fraction"] = round(row["tflops"] / peak, 4)
            row["vs_cudnn"] = round(cudnn["median_ms"] / row["median_ms"], 3)
            rows.add(row)
            kind = impl.split("/")[0]
            if kind not in best or row["median_ms"] < best[kind]["median_ms"]:
                best[kind] = row
        chosen = op.implicit._choose(x, None, (OH, OH), cells["im2col"])
        auto = "im2col" if chosen is None else f"implicit/{chosen[0]}/{chosen[1].name}"
        rows.add({**base, "impl": "auto", "keep": keep, "choice": auto})
        progress(f"{name:10s} keep {keep:.2f}  cudnn {cudnn['median_ms']:.4f}  "
                 f"im2col {best['im2col']['median_ms']:.4f}  implicit "
                 f"{best['implicit']['median_ms']:.4f} ({best['implicit']['impl']}, "
                 f"{best['implicit']['vs_cudnn']:.2f}x cudnn, "
                 f"{100 * best['implicit']['peak_fraction']:.1f}% of peak)  auto {auto}")


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("implicit_conv_bench"):
        return 2
    import cupy
    import torch
    from cupyprune.ops import conv_implicit, tune_cache
    os.environ[conv_implicit.MODE_ENV] = "auto"              # the layers get their candidates
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    rows = ResultRows()
    rows.add({"impl": "environment", "gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"]
              .decode(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "cupy": cupy.__version__, "command": " ".join(["python tools/implicit_conv_bench.py"]
                                                            + sys.argv[1:])})
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[tune_cache.CACHE_ENV] = tmp               # time afresh, keep no choices
        for spec in [s for s in PAPER + RESNET18 if s[0] in args.layers]:
            bench_layer(cupy, torch, rows, tmp, spec, args.precision, summary.append)
    rows.write(args.out)
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
