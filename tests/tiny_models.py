"""Tiny model files for format, CLI and error tests: a conv-bn-relu-pool-linear net whose
reference output is computed with torch.nn.functional (never with cupyprune)."""
import numpy as np

from cupyprune.format import write_model_file

C_IN, K, S, CLASSES = 3, 8, 9, 5


def tiny_tensors(rng, group_mask=True):
    w = rng.standard_normal((K, C_IN, 3, 3)).astype(np.float32)
    t = {
        "c.weight": w,
        "c.bias": rng.standard_normal(K).astype(np.float32),
        "bn.weight": rng.standard_normal(K).astype(np.float32),
        "bn.bias": rng.standard_normal(K).astype(np.float32),
        "bn.running_mean": rng.standard_normal(K).astype(np.float32),
        "bn.running_var": (rng.random(K) + 0.5).astype(np.float32),
        "fc.weight": rng.standard_normal((CLASSES, K * 4)).astype(np.float32),
        "fc.bias": rng.standard_normal(CLASSES).astype(np.float32),
    }
    if group_mask:
        keep = rng.random((C_IN, 3, 3)) < 0.5
        keep.flat[rng.integers(keep.size)] = True
        t["c.weight.mask"] = np.broadcast_to(keep, w.shape).astype(np.float32)
    return t


def tiny_graph():
    bn = {r: f"bn.{r}" for r in ("weight", "bias", "running_mean", "running_var")}
    return {"inputs": ["image"], "outputs": ["logits"], "nodes": [
        {"name": "c", "op": "conv2d", "inputs": ["image"], "outputs": ["t0"],
         "params": {"weight": "c.weight", "bias": "c.bias"},
         "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}},
        {"name": "bn", "op": "batch_norm", "inputs": ["t0"], "outputs": ["t1"], "params": bn,
         "attrs": {"eps": 1e-5}},
        {"name": "r", "op": "relu", "inputs": ["t1"], "outputs": ["t2"]},
        {"name": "p", "op": "max_pool2d", "inputs": ["t2"], "outputs": ["t3"],
         "attrs": {"kernel": [2, 2], "stride": [2, 2]}},
        {"name": "a", "op": "adaptive_avg_pool2d", "inputs": ["t3"], "outputs": ["t4"],
         "attrs": {"output_size": [2, 2]}},
        {"name": "f", "op": "flatten", "inputs": ["t4"], "outputs": ["t5"]},
        {"name": "fc", "op": "linear", "inputs": ["t5"], "outputs": ["logits"],
         "params": {"weight": "fc.weight", "bias": "fc.bias"}},
    ]}


def tiny_spec():
    return [{"name": "image", "shape": [None, C_IN, S, S], "dtype": "float32", "layout": "NCHW",
             "kind": "image"}]


def write_tiny(path, rng, tensors=None, graph=None, spec=None, pruning=None, labels=None):
    tensors = tiny_tensors(rng) if tensors is None else tensors
    write_model_file(str(path), tensors, graph or tiny_graph(), spec or tiny_spec(),
                     pruning=pruning, labels=labels, exporter="tests/tiny_models.py")
    return tensors


def torch_reference(t, x):
    """The tiny net in torch.nn.functional, masked dense."""
    import torch
    import torch.nn.functional as F
    T = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}
    w = T["c.weight"] * T["c.weight.mask"] if "c.weight.mask" in T else T["c.weight"]
    y = F.conv2d(torch.from_numpy(x), w, T["c.bias"], padding=1)
    y = F.batch_norm(y, T["bn.running_mean"], T["bn.running_var"], T["bn.weight"], T["bn.bias"],
                     eps=1e-5)
    y = F.adaptive_avg_pool2d(F.max_pool2d(F.relu(y), 2), 2)
    return F.linear(y.flatten(1), T["fc.weight"], T["fc.bias"]).numpy()
