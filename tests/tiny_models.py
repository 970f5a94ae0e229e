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
    T = {k: torch.from_numpy(np.array(v)) for k, v in t.items()}       # own, writable copies
    w = T["c.weight"] * T["c.weight.mask"] if "c.weight.mask" in T else T["c.weight"]
    y = F.conv2d(torch.from_numpy(x), w, T["c.bias"], padding=1)
    y = F.batch_norm(y, T["bn.running_mean"], T["bn.running_var"], T["bn.weight"], T["bn.bias"],
                     eps=1e-5)
    y = F.adaptive_avg_pool2d(F.max_pool2d(F.relu(y), 2), 2)
    return F.linear(y.flatten(1), T["fc.weight"], T["fc.bias"]).numpy()


# a two-layer MLP (linear, GELU, linear): a group-wise second linear makes the first compute
# only the features it keeps (passes.compact_producers), as in a transformer's FFN
MLP_IN, MLP_HIDDEN, MLP_CLASSES = 64, 128, 16


def mlp_graph():
    return {"inputs": ["x"], "outputs": ["logits"], "nodes": [
        {"name": "fc1", "op": "linear", "inputs": ["x"], "outputs": ["h"],
         "params": {"weight": "fc1.weight", "bias": "fc1.bias"}},
        {"name": "act", "op": "gelu", "inputs": ["h"], "outputs": ["a"]},
        {"name": "fc2", "op": "linear", "inputs": ["a"], "outputs": ["logits"],
         "params": {"weight": "fc2.weight", "bias": "fc2.bias"}},
    ]}


def mlp_spec():
    return [{"name": "x", "shape": [None, MLP_IN], "dtype": "float32", "kind": "features"}]


def mlp_tensors(rng):
    return {"fc1.weight": rng.standard_normal((MLP_HIDDEN, MLP_IN)).astype(np.float32),
            "fc1.bias": rng.standard_normal(MLP_HIDDEN).astype(np.float32),
            "fc2.weight": rng.standard_normal((MLP_CLASSES, MLP_HIDDEN)).astype(np.float32),
            "fc2.bias": rng.standard_normal(MLP_CLASSES).astype(np.float32)}


def torch_mlp(t, x):
    """The MLP in torch.nn.functional, on the weights as given (masked ones already zero)."""
    import torch
    import torch.nn.functional as F
    T = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}
    h = F.gelu(F.linear(torch.from_numpy(x), T["fc1.weight"], T["fc1.bias"]))
    return F.linear(h, T["fc2.weight"], T["fc2.bias"]).numpy()
