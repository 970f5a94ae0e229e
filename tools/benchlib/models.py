"""Model tables (paper Tables 1-8): each model dense and pruned with each pattern at ~75/50/25%
kept; ours (auto path, and CSR), our dense path, and PyTorch eager dense on the same weights and
inputs, in one process. Random weights: latency only (accuracy is docs/ACCURACY.md's).

Rows: model x shape x pattern x keep x precision; columns (impl): ours-auto, ours-csr (fp32),
ours-dense, torch-eager. Batch 64, except VGG-16 at 224x224 (batch 16, as memory and the paper's
Table 8 setting allow). Each cell also records its relative error against torch fp32."""
import os
import tempfile
import time

import numpy as np

from cupyprune import load
from cupyprune.bench import graph_bytes
from cupyprune.format.keys import PRUNING_PATTERNS as PATTERNS

from .precisions import torch_dtype
from .timing import free_gpu_memory, rel_err, time_gpu

KEEPS = (0.75, 0.5, 0.25)
VECTOR_M = 4
BLOCK = (4, 4)
VIT = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)

# name, family, arch, variant/config, image size or sequence, classes, batch, keeps
PRESETS = {
    "cnn": [
        ("vgg16_bn-cifar10", "cnn", "vgg16_bn", "cifar", 32, 10, 64, KEEPS),
        ("resnet18-cifar10", "cnn", "resnet18", "cifar", 32, 10, 64, KEEPS),
        ("vgg16_bn-tiny", "cnn", "vgg16_bn", "cifar", 64, 200, 64, KEEPS),
        ("resnet18-tiny", "cnn", "resnet18", "cifar", 64, 200, 64, KEEPS),
        ("vgg16-imagenet", "cnn", "vgg16", "imagenet", 224, 1000, 16, (0.5,)),
    ],
    "transformer": [
        ("vit-cifar10", "vit", "vit", dict(VIT, image_size=32, patch_size=4), 32, 10, 64, KEEPS),
        ("vit-tiny", "vit", "vit", dict(VIT, image_size=64, patch_size=8), 64, 200, 64, KEEPS),
        ("bert-base-qqp", "bert", "bert", {}, 128, 2, 64, KEEPS),
    ],
}
PRECISIONS = ("fp32", "fp16")


def _torch_model(family, arch, variant, size, classes):
    import torch
    if family == "cnn":
        from archs import build
        model = build(arch, classes, variant)
        for m in model.modules():                 # real-looking BN statistics, not 0/1
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.1)
        return model, None
    from cupyprune.export.torchlib import import_torch
    import_torch()
    import transformers
    if family == "vit":
        cfg = transformers.ViTConfig(num_labels=classes, **variant)
        model = transformers.ViTForImageClassification(cfg)
    else:
        cfg = transformers.BertConfig(num_labels=classes)
        model = transformers.BertForSequenceClassification(cfg)
    return model, cfg


def _inputs(family, size, batch, cfg, rng):
    if family in ("cnn", "vit"):
        return {"x": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}
    ids = rng.integers(0, cfg.vocab_size, size=(batch, size))
    mask = np.ones((batch, size), dtype=np.int64)
    mask[: batch // 2, size * 3 // 4:] = 0                    # padded sequences
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def _torch_forward(model, family, inputs, dtype):
    import torch
    if family in ("cnn", "vit"):
        x = torch.from_numpy(inputs["x"]).cuda().to(dtype)
        fn = (lambda: model(x)) if family == "cnn" else (lambda: model(pixel_values=x).logits)
    else:
        t = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
        fn = lambda: model(**t).logits                       # noqa: E731
    return fn


def _ours_inputs(family, inputs):
    import cupy
    if family == "cnn":
        return {"image": cupy.asarray(inputs["x"])}
    if family == "vit":
        return {"pixel_values": cupy.asarray(inputs["x"])}
    return {k: cupy.asarray(v) for k, v in inputs.items()}


def _export(family, arch, variant, size, classes, state_dict, cfg, out, tmp):
    if family == "cnn":
        from exporters.cnn import export_cnn
        export_cnn(arch, state_dict, out, variant=variant, num_classes=classes, image_size=size)
    else:
        from exporters.hf import export_hf
        cfg_path = os.path.join(tmp, "config.json")
        cfg.to_json_file(cfg_path)
        export_hf(arch, state_dict, cfg_path, out)


def _masked_state(sd, pattern, keep):
    """original state dict -> (masked-dense state dict for torch, prune re-param state dict for
    the exporter)"""
    from checkpoint import reparametrize
    from cupyprune.export.pruning.masks import default_prunable_keys, prune_state_dict
    if pattern == "dense":
        return sd, sd
    keys = default_prunable_keys(sd)
    kw = {"n_m": (int(round(keep * VECTOR_M)), VECTOR_M)} if pattern == "vector" else {}
    if pattern == "block":
        kw["block"] = BLOCK
    masks = prune_state_dict(sd, keys, pattern, keep, **kw)
    masked = {k: (sd[k] * masks[k] if k in masks else v) for k, v in sd.items()}
    return masked, reparametrize(sd, masks)


def run_isolated(preset, names, out, max_minutes, progress=print, extra=()):
    """Each named model of the preset in its own process, so that whatever one model's run leaves
    allocated on the GPU (we saw device memory grow across CSR cells) cannot starve the next."""
    import subprocess
    import sys
    t_end = time.time() + 60 * max_minutes
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "paper_bench.py")
    for name in names:
        left = (t_end - time.time()) / 60
        if left <= 0.2:
            progress("time limit reached; run the preset again to resume")
            return
        progress(f"-- {name} (own process, {left:.1f} min left)")
        subprocess.run([sys.executable, script, "--preset", preset, "--model", name,
                        "--out", out, "--max-minutes", f"{left:.2f}", *extra], check=False)


def wanted_cells(pattern, precisions=PRECISIONS):
    """(impl, precision) cells of one table row: ours on two paths and PyTorch in each
    precision, and the CSR baseline in fp32 for a pruned row."""
    return [(impl, prec) for prec in precisions
            for impl in ("ours-auto", "ours-dense", "torch-eager")
            + (("ours-csr",) if prec == "fp32" and pattern != "dense" else ())]


def run_preset(store, preset, progress=print, max_minutes=9.0, only=None, patterns=None,
               precisions=None):
    import torch
    t_end = time.time() + 60 * max_minutes
    rng = np.random.default_rng(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name, family, arch, variant, size, classes, batch, keeps in PRESETS[preset]:
        if only is not None and name != only:
            continue
        torch.manual_seed(0)
        model, cfg = _torch_model(family, arch, variant, size, classes)
        model = model.eval()
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.cuda()
        inputs = _inputs(family, size, batch, cfg, rng)
        rows = [("dense", 1.0)] + [(p, k) for p in (patterns or PATTERNS) for k in keeps]
        with tempfile.TemporaryDirectory() as tmp:
            for pattern, keep in rows:
                if time.time() > t_end:
                    progress("time limit reached; run the preset again to resume")
                    return
                base = {"model": name, "shape": f"{size}", "pattern": pattern, "keep": keep,
                        "batch": batch}
                wanted = wanted_cells(pattern, precisions or PRECISIONS)
                todo = [(i, p) for i, p in wanted
                        if not store.has("models", dict(base, impl=i, precision=p))]
                if not todo:
                    continue
                masked, export_sd = _masked_state(original, pattern, keep)
                path = os.path.join(tmp, "m.safetensors")
                _export(family, arch, variant, size, classes, export_sd, cfg, path, tmp)
                model.load_state_dict(masked)
                with torch.no_grad():
                    ref = _torch_forward(model, family, inputs, torch.float32)().float().cpu().numpy()
                kept_pct = _kept_percent(export_sd)
                for impl, precision in todo:
                    cell = dict(base, impl=impl, precision=precision, kept_percent=kept_pct)
                    _measure(cell, model, family, inputs, path, ref)
                    store.add("models", cell)
                    progress(f"{name} {pattern:7s} keep {keep:.2f} {precision} {impl:11s} "
                             f"{cell['median_ms']:8.3f} ms  err {cell['rel_err']:.1e}  "
                             f"gpu {_used_gib():.1f} GiB")
        del model


def _used_gib():
    import cupy
    free, total = cupy.cuda.runtime.memGetInfo()
    return (total - free) / 2**30


def _kept_percent(export_sd):
    masks = [v for k, v in export_sd.items() if k.endswith("_mask")]
    if not masks:
        return 100.0
    kept = sum(float(m.sum()) for m in masks)
    total = sum(m.numel() for m in masks)
    return 100.0 * kept / total


def _measure(cell, model, family, inputs, path, ref):
    import cupy
    import torch
    precision, impl = cell["precision"], cell["impl"]
    if impl == "torch-eager":
        dtype = torch_dtype(precision)
        model.to(dtype)
        t_inputs = dict(inputs)
        fn = _torch_forward(model, family, t_inputs, dtype)
        with torch.no_grad():
            y = fn().float().cpu().numpy()
            cell.update(time_gpu(lambda: fn(), warmup=5, repeat=20))
        model.float()
    else:
        path_choice = {"ours-auto": "auto", "ours-dense": "dense", "ours-csr": "csr"}[impl]
        ours = load(path, device="gpu", path_choice=path_choice, precision=precision)
        x = _ours_inputs(family, inputs)
        y = cupy.asnumpy(ours(**x)).astype(np.float32)
        repeat = 5 if impl == "ours-csr" else 20
        cell.update(time_gpu(lambda: ours(**x), warmup=3, repeat=repeat))
        cell["cuda_graph"] = ours.graph_runner is not None and ours.graph_runner.failed is None
        cell["peak_bytes"] = int(cupy.get_default_memory_pool().total_bytes()) + graph_bytes(ours)
        cell["paths_used"] = sorted({s.op.describe()["path"] for s in ours.layers()})
        del ours
        free_gpu_memory()
    cell["rel_err"] = rel_err(y, ref)
    cell["argmax_agree"] = float((y.argmax(-1) == ref.argmax(-1)).mean())
