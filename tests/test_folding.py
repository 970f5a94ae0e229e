"""Residual adds and the activations after them fold into the conv/linear epilogue; outputs equal
torch.nn.functional's on fresh random inputs, on every device; the GPU epilogue kernel equals a
float64 NumPy reference for every activation, pack width and precision."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cupyprune
from conftest import devices, rel_err
from cupyprune.format import write_model_file


def _conv(name, x, y, weight):
    return {"name": name, "op": "conv2d", "inputs": [x], "outputs": [y],
            "params": {"weight": weight, "bias": weight.replace("weight", "bias")},
            "attrs": {"padding": [1, 1]}}


def _block_graph(shortcut_first):
    """a -> relu -> b; shortcut s on the input; y = relu(b + s). Node order decides which conv
    runs last, and so which one can take the sum in its epilogue."""
    nodes = [_conv("a", "image", "ta", "a.weight"),
             {"name": "ra", "op": "relu", "inputs": ["ta"], "outputs": ["ra"]}]
    b, s = _conv("b", "ra", "tb", "b.weight"), _conv("s", "image", "ts", "s.weight")
    nodes += [s, b] if shortcut_first else [b, s]
    nodes += [{"name": "sum", "op": "add", "inputs": ["tb", "ts"], "outputs": ["t"]},
              {"name": "out", "op": "relu", "inputs": ["t"], "outputs": ["y"]}]
    return {"inputs": ["image"], "outputs": ["y"], "nodes": nodes}


def _block_tensors(rng):
    t = {}
    for name, cin in (("a", 3), ("b", 4), ("s", 3)):
        t[f"{name}.weight"] = (rng.standard_normal((4, cin, 3, 3)) / 4).astype(np.float32)
        t[f"{name}.bias"] = rng.standard_normal(4).astype(np.float32)
    return t


def _block_values(t, x):
    """Every named value of the block graph, float64: y, and the two branch outputs tb, ts."""
    T = {k: torch.from_numpy(v).double() for k, v in t.items()}
    conv = lambda v, n: F.conv2d(v, T[f"{n}.weight"], T[f"{n}.bias"], padding=1)  # noqa: E731
    xt = torch.from_numpy(x).double()
    tb, ts = conv(F.relu(conv(xt, "a")), "b"), conv(xt, "s")
    return {"y": F.relu(tb + ts).numpy(), "tb": tb.numpy(), "ts": ts.numpy()}


def _block_reference(t, x):
    return _block_values(t, x)["y"]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shortcut_first", [False, True])
def test_residual_block_folds_into_the_conv_that_runs_last(rng, tmp_path, device,
                                                           shortcut_first):
    t = _block_tensors(rng)
    spec = [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "block.safetensors"
    write_model_file(str(path), t, _block_graph(shortcut_first), spec)
    model = cupyprune.load(path, device=device)
    last, other = ("b", "ts") if shortcut_first else ("s", "tb")
    assert model.residual == {last: other}
    assert model.post == {last: "relu"} and model.fused == {"a": "relu"}
    assert [s.node.name for s in model.steps] == [n["name"] for n in
                                                  _block_graph(shortcut_first)["nodes"][:4]
                                                  if n["name"] != "ra"]
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert rel_err(model(x), _block_reference(t, x)) <= 1e-5


@pytest.mark.parametrize("device", devices())
def test_add_of_a_value_read_twice_is_not_folded(rng, tmp_path, device):
    """The conv output also feeds the graph's second output: the add must run on its own."""
    t = _block_tensors(rng)
    graph = _block_graph(False)
    graph["outputs"] = ["y", "tb"]
    spec = [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "two.safetensors"
    write_model_file(str(path), t, graph, spec)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = _block_values(t, x)
    model = cupyprune.load(path, device=device)
    assert model.residual == {"s": "tb"}          # s's output is read once: still folds
    out = model.run(x)
    for name in ("y", "tb"):                      # the folded sum, and tb as it was before it
        assert rel_err(out[name], ref[name]) <= 1e-5, name
    graph["outputs"] = ["y", "ts", "tb"]
    write_model_file(str(path), t, graph, spec)
    model = cupyprune.load(path, device=device)
    assert model.residual == {} and model.post == {}
    out = model.run(x)
    for name in ("y", "ts", "tb"):
        assert rel_err(out[name], ref[name]) <= 1e-5, name


ACTS = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
        "gelu": lambda v: 0.5 * v * (1 + _erf(v / np.sqrt(2))),
        "gelu_tanh": lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3))),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "silu": lambda v: v / (1 + np.exp(-v)),
        "hardsigmoid": lambda v: np.clip(v / 6 + 0.5, 0, 1),
        "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
        "relu6": lambda v: np.clip(v, 0, 6)}


def _erf(v):
    from scipy.special import erf
    return erf(v)


# (activation, post-add activation, residual): a post activation only exists after a fused add
EPILOGUE_CASES = [(act, "none", res) for act in ("none", "relu", "gelu", "gelu_tanh")
                  for res in (False, True)]
EPILOGUE_CASES += [(act, "none", False) for act in ("sigmoid", "silu", "hardsigmoid",
                                                     "hardswish", "relu6")]
EPILOGUE_CASES += [("none", "relu", True), ("tanh", "relu", True)]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cols", [12, 10])            # pack of 4 columns per thread, and of 1
@pytest.mark.parametrize("act,post,with_residual", EPILOGUE_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_gpu_epilogue_kernel(rng, precision, cols, act, post, with_residual, with_bias):
    import cupy
    from cupyprune.ops.epilogue import Epilogue
    dt = np.float16 if precision == "fp16" else np.float32
    y = rng.standard_normal((333, cols)).astype(dt)
    bias = rng.standard_normal(cols).astype(dt) if with_bias else np.zeros(cols, dt)
    res = rng.standard_normal((333, cols)).astype(dt) if with_residual else None
    ref = ACTS[act](y.astype(np.float64) + bias)
    if res is not None:
        ref = ref + res
    ref = ACTS[post](ref)
    if act == post == "none" and not (with_bias or with_residual):
        pytest.skip("an identity epilogue launches nothing")
    ep = Epilogue(cupy, cupy.asarray(bias) if with_bias else None, act, with_residual, post)
    out = ep(cupy.asarray(y), None if res is None else cupy.asarray(res))
    assert rel_err(cupy.asnumpy(out), ref) <= (2e-3 if precision == "fp16" else 1e-6)


def test_forward_drops_each_value_after_its_last_reader(rng, tmp_path):
    """The executor frees activations as it goes: every value a step reads is released exactly
    once, after its last reader, and graph outputs never are."""
    t = _block_tensors(rng)
    spec = [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "block.safetensors"
    write_model_file(str(path), t, _block_graph(False), spec)
    model = cupyprune.load(path, device="cpu")
    names = [s.node.name for s in model.steps]                       # a, b, s
    released = {names[i]: r for i, r in enumerate(model._release)}
    assert released["a"] == [] and released["b"] == ["ta"]       # relu output = a's
    assert sorted(released["s"]) == ["image", "tb"]                  # s reads both last
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert rel_err(model(x), _block_reference(t, x)) <= 1e-5


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_after_a_linear_folds_in_both_forms(rng, tmp_path, device, approximate):
    """A linear's GELU, exact or tanh-approximated (Hugging Face's gelu_new), runs in the
    linear's epilogue and equals torch's."""
    w = (rng.standard_normal((7, 5)) / 2).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    graph = {"inputs": ["x"], "outputs": ["y"], "nodes": [
        {"name": "fc", "op": "linear", "inputs": ["x"], "outputs": ["h"],
         "params": {"weight": "fc.weight", "bias": "fc.bias"}},
        {"name": "act", "op": "gelu", "inputs": ["h"], "outputs": ["y"],
         "attrs": {"approximate": approximate}}]}
    spec = [{"name": "x", "shape": [None, 5], "dtype": "float32", "kind": "features"}]
    path = tmp_path / "fc.safetensors"
    write_model_file(str(path), {"fc.weight": w, "fc.weight.mask": np.ones_like(w),
                                 "fc.bias": b}, graph, spec)
    model = cupyprune.load(path, device=device)
    assert model.fused == {"fc": "gelu" if approximate == "none" else "gelu_tanh"}
    x = (rng.standard_normal((9, 5)) * 2).astype(np.float32)
    h = F.linear(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                 torch.from_numpy(b).double())
    ref = F.gelu(h, approximate=approximate).numpy()
    assert np.abs(F.gelu(h).numpy() - F.gelu(h, approximate="tanh").numpy()).max() > 1e-5
    assert rel_err(model(x), ref) <= 1e-6


# graph op, its attrs, the epilogue form it folds into (None: runs as its own op), torch's
MOBILE_ACTIVATIONS = [
    ("sigmoid", {}, "sigmoid", F.sigmoid), ("silu", {}, "silu", F.silu),
    ("hardsigmoid", {}, "hardsigmoid", F.hardsigmoid), ("hardswish", {}, "hardswish", F.hardswish),
    ("hardtanh", {"min_val": 0.0, "max_val": 6.0}, "relu6", F.relu6),
    ("hardtanh", {"min_val": -1.0, "max_val": 2.0}, None,
     lambda h: F.hardtanh(h, min_val=-1.0, max_val=2.0))]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op,attrs,form,torch_fn", MOBILE_ACTIVATIONS,
                         ids=[f"{a[0]}-{a[2]}" for a in MOBILE_ACTIVATIONS])
def test_mobile_activations_after_a_conv_fold(rng, tmp_path, device, op, attrs, form, torch_fn):
    """SiLU (EfficientNet), hardswish and hardsigmoid (MobileNetV3), ReLU6 (MobileNetV2: a
    hardtanh from 0 to 6) and sigmoid run in the conv's epilogue, after its batch norm, and
    equal torch's; a hardtanh with other bounds stays its own op and is still right."""
    w = (rng.standard_normal((6, 3, 3, 3)) / 3).astype(np.float32)
    bn = {"bn.weight": rng.uniform(0.5, 1.5, 6), "bn.bias": rng.standard_normal(6),
          "bn.running_mean": rng.standard_normal(6) * 0.1,
          "bn.running_var": rng.uniform(0.5, 1.5, 6)}
    tensors = {"conv.weight": w, "conv.weight.mask": np.ones_like(w),
               **{k: v.astype(np.float32) for k, v in bn.items()}}
    graph = {"inputs": ["image"], "outputs": ["y"], "nodes": [
        {"name": "conv", "op": "conv2d", "inputs": ["image"], "outputs": ["c"],
         "params": {"weight": "conv.weight"},
         "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}},
        {"name": "bn", "op": "batch_norm", "inputs": ["c"], "outputs": ["h"],
         "params": {"weight": "bn.weight", "bias": "bn.bias", "running_mean": "bn.running_mean",
                    "running_var": "bn.running_var"}, "attrs": {"eps": 1e-5}},
        {"name": "act", "op": op, "inputs": ["h"], "outputs": ["y"], "attrs": attrs}]}
    spec = [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "convact.safetensors"
    write_model_file(str(path), tensors, graph, spec)
    model = cupyprune.load(path, device=device)
    assert model.fused == ({"conv": form} if form else {})
    x = (rng.standard_normal((2, 3, 8, 8)) * 3).astype(np.float32)      # past the clip points
    t = {k: torch.from_numpy(v).double() for k, v in tensors.items()}
    h = F.batch_norm(F.conv2d(torch.from_numpy(x).double(), t["conv.weight"], padding=1),
                     t["bn.running_mean"], t["bn.running_var"], t["bn.weight"], t["bn.bias"],
                     eps=1e-5)
    assert rel_err(model(x), torch_fn(h).numpy()) <= 1e-5
