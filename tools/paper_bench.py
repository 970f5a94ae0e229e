"""Reproduce the paper's latency tables and figures on this GPU, PyTorch side by side.

    python tools/paper_bench.py --preset layers --out bench/results/h100/layers.json

Presets (each sized to finish within 10 minutes on an H100):
  quick   the conv layer at 50% kept (fp32, fp16) and its step breakdown
  layers  layer sweeps, paper Figs. 11 and 14: conv 512x512 3x3 28x28 b64, linear 4096 b64,
          BERT FFN at 8192 tokens; kept 10%..100%; fp32, tf32, fp16
  steps   step breakdown, paper Figs. 12-13
  cnn     model tables for VGG-16 / ResNet-18 (paper Tables 1-2, 5-6, 8)
  transformer  model tables for ViT and BERT-base (paper Tables 3-4, 7)
  batch1  batch-1 overhead: end to end against the kernel sum, and where the host time goes
  deploy  peak memory group-wise vs dense, kernel breakdown (performance issue)
  compile torch.compile (fp32, fp16) of every model-table model, dense, beside ours group-wise
          at 50% kept (the model tables' torch.compile column)
  fused   GEMM epilogues inside cuBLASLt's GEMM vs apart, group-wise 50%, batch 64
The results file is resumable: cells already in it are skipped; merge files with --merge.
Needs a CUDA GPU, CuPy and torch; accuracy is not measured here (random weights).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import layers, steps  # noqa: E402
from benchlib.results import ResultsError, ResultStore, merge, read_results  # noqa: E402
from oneline import (OneLineParser, UsageError, gpu_or_say, parse_or_exit,  # noqa: E402
                     parse_with_out, positive_float, run_tool)

SWEEP = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)   # 25/50/75: target 1
PRESETS = {
    "quick": [(layers.conv_sweep, (0.5,), ("fp32", "fp16")),
              (steps.conv_steps, (0.5,), ("fp32", "fp16"))],
    "layers": [(layers.conv_sweep, SWEEP, ("fp32", "tf32", "fp16")),
               (layers.linear_sweep, SWEEP, ("fp32", "tf32", "fp16"))],
    "layers-fp16": [(layers.conv_sweep, SWEEP, ("fp16",)),
                    (layers.linear_sweep, SWEEP, ("fp16",))],
    "layers-tf32": [(layers.conv_sweep, SWEEP, ("tf32",)),
                    (layers.linear_sweep, SWEEP, ("tf32",))],
    "linears": [(layers.linear_sweep, SWEEP, ("fp32", "tf32", "fp16"))],
    "convs": [(layers.conv_sweep, SWEEP, ("fp32", "tf32", "fp16"))],
    "steps": [(steps.conv_steps, (0.25, 0.5, 0.75), ("fp32", "fp16")),
              (steps.linear_steps, (0.25, 0.5, 0.75), ("fp32", "fp16"))],
}


def _model_names(preset):
    def names():
        from benchlib import models
        return [spec[0] for spec in models.PRESETS[preset]]
    return names


def _deploy_names():
    from benchlib import deploy
    return list(deploy.MODELS)


def _table_names():
    """Every model of the model tables (cnn, then transformer)."""
    return _model_names("cnn")() + _model_names("transformer")()


MODEL_PRESETS = {"cnn": _model_names("cnn"), "transformer": _model_names("transformer"),
                 "batch1": _deploy_names, "deploy": _deploy_names, "compile": _table_names,
                 "fused": _deploy_names}


DEPLOY_PRESETS = ("batch1", "deploy", "compile", "fused")      # benchlib/deploy.py's


def run_model_preset(args, name, progress):
    store = ResultStore(args.out, environment())
    if args.preset in DEPLOY_PRESETS:
        from benchlib import deploy
        precisions = args.precisions.split(",") if args.precisions else deploy.PRECISIONS
        deploy.run_preset(store, args.preset, progress, args.max_minutes, only=name,
                          precisions=precisions)
    else:
        from benchlib import models
        models.run_preset(store, args.preset, progress, max_minutes=args.max_minutes, only=name,
                          patterns=args.patterns.split(",") if args.patterns else None,
                          precisions=args.precisions.split(",") if args.precisions else None)


def environment():
    import cupy
    import torch
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return {"gpu": props["name"].decode(), "cupy": cupy.__version__, "torch": torch.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d")}


def _subset(text, allowed, option):
    """'a,b' -> ['a', 'b'] when every item is allowed, else a UsageError."""
    items = text.split(",")
    unknown = [i for i in items if i not in allowed]
    if unknown or not items:
        raise UsageError(f"{option}: {', '.join(unknown) or repr(text)} not in "
                         f"{', '.join(allowed)}")
    return items


def _sweep_values(preset, field):
    """The kept fractions (field 1) or precisions (field 2) a layer preset runs, in order, as
    the option spells them."""
    return tuple(dict.fromkeys(str(v) for entry in PRESETS[preset] for v in entry[field]))


def parse_args(argv):
    """Every option checked before anything runs: a bad one is one line `error: ...`, exit 2."""
    ap = OneLineParser(prog="tools/paper_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS) + sorted(MODEL_PRESETS))
    ap.add_argument("--out", help="results JSON (resumed when it exists)")
    ap.add_argument("--merge", nargs="+", metavar="FILE", help="merge results files into --out")
    ap.add_argument("--model", help="model presets: run only these models (comma-separated)")
    ap.add_argument("--patterns", help="cnn and transformer presets: comma-separated subset of "
                    "element,vector,block,group (default: all four)")
    ap.add_argument("--precisions", help="batch1, deploy, compile and fused presets: "
                    "comma-separated subset of fp32,fp16,bf16 (default: fp32,fp16); cnn and "
                    "transformer presets: of fp32,fp16; layer presets: a subset of the "
                    "preset's precisions")
    ap.add_argument("--keeps", help="layer presets: run only these kept fractions of the "
                    "preset's sweep (comma-separated, e.g. 0.25,0.5,0.75)")
    ap.add_argument("--max-minutes", type=positive_float, default=9.0,
                    help="model presets start no new cell after this long (resume later)")
    args = parse_with_out(ap, argv)
    if args.merge:
        return args
    if not args.preset:
        raise UsageError("--preset is required (or --merge)")
    if os.path.exists(args.out):
        try:
            read_results(args.out)                  # resumed: it must be a results file
        except ResultsError as e:
            raise UsageError(f"--out {e}") from None
    if args.precisions:
        if args.preset in DEPLOY_PRESETS:
            _subset(args.precisions, ("fp32", "fp16", "bf16"), "--precisions")
        elif args.preset in PRESETS:
            _subset(args.precisions, _sweep_values(args.preset, 2), "--precisions")
        else:                                             # cnn, transformer: the model tables
            from benchlib.models import PRECISIONS
            _subset(args.precisions, PRECISIONS, "--precisions")
    if args.keeps:
        if args.preset not in PRESETS:
            raise UsageError(f"--keeps is for the layer presets ({', '.join(PRESETS)})")
        _subset(args.keeps, _sweep_values(args.preset, 1), "--keeps")
    if args.patterns:
        from benchlib.models import PATTERNS
        if args.preset not in ("cnn", "transformer"):
            raise UsageError("--patterns is for the cnn and transformer presets")
        _subset(args.patterns, PATTERNS, "--patterns")
    if args.model:
        if args.preset not in MODEL_PRESETS:
            raise UsageError(f"--model is for the model presets ({', '.join(MODEL_PRESETS)})")
        _subset(args.model, MODEL_PRESETS[args.preset](), "--model")
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if args.merge:
        try:
            merge(args.merge, args.out)
        except ResultsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
        return 0
    if not gpu_or_say("paper_bench"):
        return 2
    t0 = time.time()
    progress = lambda s: print(s, flush=True)                # noqa: E731
    if args.preset in MODEL_PRESETS:
        wanted = args.model.split(",") if args.model else MODEL_PRESETS[args.preset]()
        if len(wanted) > 1:            # each model in its own process
            ResultStore(args.out, environment()).save()
            extra = (("--patterns", args.patterns) if args.patterns else ()) + (
                ("--precisions", args.precisions) if args.precisions else ())
            from benchlib import models
            models.run_isolated(args.preset, wanted, args.out, args.max_minutes, progress, extra)
        else:
            run_model_preset(args, wanted[0], progress)
    else:
        store = ResultStore(args.out, environment())
        only_keeps = args.keeps.split(",") if args.keeps else None
        only_precisions = args.precisions.split(",") if args.precisions else None
        for fn, keeps, precisions in PRESETS[args.preset]:
            keeps = [k for k in keeps if only_keeps is None or str(k) in only_keeps]
            precisions = [p for p in precisions if only_precisions is None
                          or p in only_precisions]
            if keeps and precisions:
                fn(store, keeps, precisions, progress=progress)
    print(f"preset {args.preset} done in {time.time() - t0:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
