"""CNN ops against torch.nn.functional, each through a tiny model file of one or two nodes.

Inputs and weights are fresh random draws (the `rng` fixture); shapes are small and
non-square, so that a swapped H/W or a wrong tap order shows.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cupyprune
from conftest import devices, rel_err
from cupyprune.format import write_model_file

TOL = 1e-5          # fp32


def image_spec(name, shape):
    return {"name": name, "shape": [None, *shape[1:]], "dtype": "float32", "layout": "NCHW",
            "kind": "image"}


def node(name, op, inputs, params=None, attrs=None):
    return {"name": name, "op": op, "inputs": inputs, "outputs": [name],
            "params": params or {}, "attrs": attrs or {}}


def run(tmp_path, device, nodes, inputs, tensors=(), path_choice="auto"):
    """Write a model file of `nodes` (the last one's output is the graph's), load it, run it.
    inputs: {name: NCHW float32 array}. -> (output, model)"""
    path = tmp_path / "op.safetensors"
    graph = {"inputs": list(inputs), "outputs": [nodes[-1]["name"]], "nodes": nodes}
    write_model_file(path, dict(tensors), graph,
                     [image_spec(k, v.shape) for k, v in inputs.items()])
    model = cupyprune.load(path, device=device, path_choice=path_choice)
    out = model(**inputs)
    assert out.dtype == np.float32
    return out, model


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def bn_params(rng, prefix, C):
    return {f"{prefix}.weight": rng.uniform(0.5, 1.5, C).astype(np.float32),
            f"{prefix}.bias": randn(rng, C),
            f"{prefix}.running_mean": randn(rng, C),
            f"{prefix}.running_var": rng.uniform(0.5, 2.0, C).astype(np.float32)}


def bn_node(name, x):
    roles = ("weight", "bias", "running_mean", "running_var")
    return node(name, "batch_norm", [x], {r: f"{name}.{r}" for r in roles}, {"eps": 1e-5})


def bn_ref(y, p, prefix):
    return F.batch_norm(y, t(p[f"{prefix}.running_mean"]), t(p[f"{prefix}.running_var"]),
                        t(p[f"{prefix}.weight"]), t(p[f"{prefix}.bias"]), training=False,
                        eps=1e-5)


def conv_case(rng, kernel, bias, group_mask, C=5, K=6):
    """-> (tensors, params, reference weight): a random conv, optionally with a group mask."""
    w = randn(rng, K, C, *kernel)
    tensors, params = {"conv.weight": w}, {"weight": "conv.weight"}
    if group_mask:                      # the same kept (c, i, j) taps for every output channel
        keep = rng.random((1, C, *kernel)) < 0.5
        keep.flat[0], keep.flat[-1] = True, False
        mask = np.broadcast_to(keep, w.shape).astype(np.float32)
        tensors["conv.weight.mask"] = mask
        w = w * mask
    if bias:
        tensors["conv.bias"] = randn(rng, K)
        params["bias"] = "conv.bias"
    return tensors, params, w


CONV_GEOMETRY = [  # kernel, stride, padding, dilation
    (k, s, p, d) for k in ((1, 1), (3, 3), (7, 7)) for s in (1, 2) for p in (0, 1, 2)
    for d in (1, 2)] + [((3, 5), (2, 1), (1, 2), (1, 1)), ((1, 3), (1, 2), (0, 1), (2, 1))]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("group_mask", [False, True], ids=["unmasked", "group-mask"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kernel,stride,padding,dilation", CONV_GEOMETRY)
def test_conv2d(tmp_path, rng, device, kernel, stride, padding, dilation, bias, group_mask):
    tensors, params, w = conv_case(rng, kernel, bias, group_mask)
    x = randn(rng, 2, 5, 16, 15)
    attrs = {"stride": list(np.broadcast_to(stride, 2).tolist()),
             "padding": list(np.broadcast_to(padding, 2).tolist()),
             "dilation": list(np.broadcast_to(dilation, 2).tolist())}
    out, model = run(tmp_path, device, [node("conv", "conv2d", ["image"], params, attrs)],
                     {"image": x}, tensors)
    ref = F.conv2d(t(x), t(w), t(tensors["conv.bias"]) if bias else None, stride=stride,
                   padding=padding, dilation=dilation)
    assert rel_err(out, ref.numpy()) <= TOL
    assert model.layers()[0].op.describe()["path"] == ("group" if group_mask else "dense")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("group_mask", [False, True], ids=["unmasked", "group-mask"])
def test_conv2d_folded_batch_norm(tmp_path, rng, device, bias, group_mask):
    tensors, params, w = conv_case(rng, (3, 3), bias, group_mask)
    tensors.update(bn_params(rng, "bn", 6))
    x = randn(rng, 3, 5, 9, 11)
    nodes = [node("conv", "conv2d", ["image"], params, {"stride": [2, 2], "padding": [1, 1]}),
             bn_node("bn", "conv")]
    out, model = run(tmp_path, device, nodes, {"image": x}, tensors)
    assert model.folded == {"conv": "bn"}
    y = F.conv2d(t(x), t(w), t(tensors["conv.bias"]) if bias else None, stride=2, padding=1)
    assert rel_err(out, bn_ref(y, tensors, "bn").numpy()) <= TOL


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("after", ["input", "relu"])
def test_batch_norm_standalone(tmp_path, rng, device, after):
    tensors = bn_params(rng, "bn", 4)
    x = randn(rng, 2, 4, 5, 7)
    nodes = [node("relu", "relu", ["image"])] if after == "relu" else []
    nodes.append(bn_node("bn", nodes[-1]["name"] if nodes else "image"))
    out, model = run(tmp_path, device, nodes, {"image": x}, tensors)
    assert model.folded == {}
    y = F.relu(t(x)) if after == "relu" else t(x)
    assert rel_err(out, bn_ref(y, tensors, "bn").numpy()) <= TOL


@pytest.mark.parametrize("device", devices())
def test_relu(tmp_path, rng, device):
    x = randn(rng, 2, 3, 4, 5)
    out, _ = run(tmp_path, device, [node("relu", "relu", ["image"])], {"image": x})
    assert rel_err(out, F.relu(t(x)).numpy()) <= TOL


POOLS = [  # kernel, stride, padding
    (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0), ((3, 2), (2, 1), (1, 0))]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("kernel,stride,padding", POOLS)
def test_max_pool2d(tmp_path, rng, device, kernel, stride, padding):
    x = randn(rng, 2, 3, 11, 8)
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    out, _ = run(tmp_path, device, [node("pool", "max_pool2d", ["image"], attrs=attrs)],
                 {"image": x})
    assert rel_err(out, F.max_pool2d(t(x), kernel, stride, padding).numpy()) <= TOL


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding", POOLS)
def test_avg_pool2d(tmp_path, rng, device, kernel, stride, padding, count_include_pad):
    x = randn(rng, 2, 3, 11, 8)
    attrs = {"kernel": kernel, "stride": stride, "padding": padding,
             "count_include_pad": count_include_pad}
    out, _ = run(tmp_path, device, [node("pool", "avg_pool2d", ["image"], attrs=attrs)],
                 {"image": x})
    ref = F.avg_pool2d(t(x), kernel, stride, padding, count_include_pad=count_include_pad)
    assert rel_err(out, ref.numpy()) <= TOL


WIDE_POOLS = [  # kernel, stride, padding: windows far wider than the input
    ((3001, 2999), (1, 2), (1500, 1499)), ((64, 3), (1, 1), (32, 1)), (200, 7, 100)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("kernel,stride,padding", WIDE_POOLS)
def test_wide_pools(tmp_path, rng, device, kernel, stride, padding):
    """Windows thousands wide reduce in log2(kernel) passes per axis (the input is 5x6: a loop
    over the kernel's 9 million positions took minutes)."""
    x = randn(rng, 2, 3, 5, 6)
    for op, ref in (("max_pool2d", F.max_pool2d(t(x), kernel, stride, padding)),
                    ("avg_pool2d", F.avg_pool2d(t(x), kernel, stride, padding,
                                                count_include_pad=False))):
        attrs = {"kernel": kernel, "stride": stride, "padding": padding}
        if op == "avg_pool2d":
            attrs["count_include_pad"] = False
        out, _ = run(tmp_path, device, [node("pool", op, ["image"], attrs=attrs)], {"image": x})
        assert rel_err(out, ref.numpy()) <= TOL, op


ADAPTIVE = [((1, 1), (7, 7)), ((5, 5), (3, 3)), ((7, 7), (7, 7)), ((2, 2), (7, 7)),
            ((8, 8), (2, 2)), ((4, 4), (1, 1)), ((6, 9), (4, 5)), ((13, 11), (7, 7)),
            ((5, 7), (1000, 999)), ((300, 2), (7, 500))]   # up: 1 million bins


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("size,output_size", ADAPTIVE)
def test_adaptive_avg_pool2d(tmp_path, rng, device, size, output_size):
    x = randn(rng, 2, 3, *size)
    nodes = [node("pool", "adaptive_avg_pool2d", ["image"],
                  attrs={"output_size": list(output_size)})]
    out, model = run(tmp_path, device, nodes, {"image": x})
    assert rel_err(out, F.adaptive_avg_pool2d(t(x), output_size).numpy()) <= TOL
    if device == "gpu":                      # every bin shape replays in a CUDA graph
        assert model.graph_runner is not None and model.graph_runner.failed is None


@pytest.mark.gpu
@pytest.mark.parametrize("size,output_size", [((2, 2), (7, 7)), ((13, 11), (7, 7))])
def test_adaptive_avg_pool2d_fp16_in_a_graph(tmp_path, rng, size, output_size):
    """Unequal bins in fp16 (VGG's 7x7 pool after a 2x2 map): float sums, one captured graph."""
    x = randn(rng, 4, 16, *size)
    path = tmp_path / "pool.safetensors"
    graph = {"inputs": ["image"], "outputs": ["pool"], "nodes": [node(
        "pool", "adaptive_avg_pool2d", ["image"], attrs={"output_size": list(output_size)})]}
    write_model_file(path, {}, graph, [image_spec("image", x.shape)])
    model = cupyprune.load(path, device="gpu", precision="fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a failed capture warns
        out = model(x)
    assert model.graph_runner.failed is None
    ref = F.adaptive_avg_pool2d(t(x).double(), output_size).numpy()
    assert rel_err(out.get().astype(np.float64), ref) <= 2e-3


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_flatten_linear(tmp_path, rng, device, bias):
    x = randn(rng, 3, 4, 2, 3)                      # flatten -> (3, 24), in (C, H, W) order
    tensors = {"fc.weight": randn(rng, 5, 24)}
    params = {"weight": "fc.weight"}
    if bias:
        tensors["fc.bias"] = randn(rng, 5)
        params["bias"] = "fc.bias"
    nodes = [node("flatten", "flatten", ["image"], attrs={"start_dim": 1}),
             node("fc", "linear", ["flatten"], params)]
    out, _ = run(tmp_path, device, nodes, {"image": x}, tensors)
    ref = F.linear(torch.flatten(t(x), 1), t(tensors["fc.weight"]),
                   t(tensors["fc.bias"]) if bias else None)
    assert rel_err(out, ref.numpy()) <= TOL


@pytest.mark.parametrize("device", devices())
def test_add(tmp_path, rng, device):
    a, b = randn(rng, 2, 3, 4, 5), randn(rng, 2, 3, 4, 5)
    out, _ = run(tmp_path, device, [node("add", "add", ["a", "b"])], {"a": a, "b": b})
    assert rel_err(out, a.astype(np.float64) + b) <= TOL
