"""Exported zoo models on the GPU: every model of tools/export_zoo.py, group-wise pruned to 50%
(and dense), exported with cupyprune.export, run in fp32 and fp16 against PyTorch fp32 on the
same weights and inputs; with the fp16 latency of ours (CUDA-graph replay) and of PyTorch eager
fp16 on the same dense-masked weights.

    python tools/gpu_export_check.py --out results.json [--models resnet18,bert] [--batch 8]

Writes one JSON row per model x pruning x precision: max relative error, top-1 agreement with
PyTorch fp32, latency (ms, median of CUDA events) of ours and of torch eager fp16.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from cupyprune.export.torchlib import import_torch  # noqa: E402

torch = import_torch()

import cupyprune  # noqa: E402
from benchlib.timing import time_gpu  # noqa: E402
from cupyprune.export import export_module, prune_module  # noqa: E402
from cupyprune.export.sources import hf_source  # noqa: E402
from export_zoo import HF, TORCHVISION, hf_inputs, hf_model, image, torchvision_model  # noqa: E402


def _build(name, pruned, batch, rng):
    """(torch module, example inputs, batch inputs)."""
    if name in TORCHVISION:
        module = torchvision_model(name, 0)
        if pruned:
            prune_module(module, "group", 0.5)
        size = TORCHVISION[name]
        return module, image(size, 1, rng), {"x": image(size, batch, rng)}
    kind = name.split("-", 1)[1]
    _, folder = hf_model(kind, 0)
    src = hf_source(folder)
    if pruned:
        prune_module(src.module, "group", 0.5)
    return src.module, src.example_inputs, hf_inputs(kind, batch, rng), src.max_length


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def check(name, pruned, batch, tmp, rng):
    built = _build(name, pruned, batch, rng)
    module, example, inputs = built[:3]
    max_length = built[3] if len(built) > 3 else None
    path = os.path.join(tmp, "m.safetensors")
    t = time.time()
    export_module(module, example, path, max_length=max_length)
    export_s = time.time() - t
    from torch.nn.utils import prune
    for sub in module.modules():                  # masked weights, plain (eager speed)
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(sub, hook._tensor_name)
    module = module.cuda().eval()
    cuda_in = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad():
        want = _logits(module(**cuda_in)).double().cpu().numpy()
        half = module.half()
        half_in = {k: (v.half() if v.is_floating_point() else v) for k, v in cuda_in.items()}
        torch_ms = time_gpu(lambda: half(**half_in))["median_ms"]
    rows = []
    import cupy
    for precision in ("fp32", "fp16"):
        model = cupyprune.load(path, device="gpu", precision=precision)
        ours_in = {k: cupy.asarray(v.numpy()) for k, v in inputs.items()}
        got = cupy.asnumpy(model(**ours_in)).astype(np.float64)
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        agree = float((got.argmax(-1) == want.argmax(-1)).mean())
        ms = time_gpu(lambda: model(**ours_in))["median_ms"]
        rows.append({"model": name, "kept": "group 50%" if pruned else "dense",
                     "precision": precision, "batch": batch, "rel_err": rel,
                     "top1_agree": agree, "ours_ms": ms, "torch_eager_fp16_ms": torch_ms,
                     "export_s": round(export_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", default=",".join(list(TORCHVISION) + [f"hf-{k}" for k in HF]))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pruned-only", action="store_true", help="group-wise 50%% only, no dense")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for pruned in (True,) if args.pruned_only else (True, False):
                try:
                    rows += check(name, pruned, args.batch, tmp, rng)
                except Exception as e:   # noqa: BLE001  one failing model must not hide the rest
                    rows.append({"model": name, "kept": "group 50%" if pruned else "dense",
                                 "error": f"{type(e).__name__}: {e}"[:300]})
                    print(json.dumps(rows[-1]), flush=True)
                with open(args.out, "w") as f:                  # after each model: a run cut
                    json.dump({"device": _device(), "rows": rows}, f, indent=1)   # short keeps it


def _device():
    import cupy
    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


if __name__ == "__main__":
    main()
