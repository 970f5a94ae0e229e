"""End to end: a (pruned) torchvision-named CNN checkpoint -> tools/export.py -> cupyprune,
against the PyTorch module in eval mode.

Weights are fresh random draws scaled so that activations neither vanish nor explode (the
logits must depend on the image, or a wrong layer would not show); BatchNorm gets random
running statistics and affine parameters, so that folding is exercised. Group-wise masks
(the same kept (c_in, i, j) taps for every output channel; kept input features for a linear)
go on every conv but the first and every linear but the last, through
torch.nn.utils.prune.custom_from_mask, so the checkpoint holds weight_orig + weight_mask.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import cupyprune
from archs import build
from conftest import ROOT, TOOLS, devices, rel_err
from export import main as export_main

TOL = 1e-5          # fp32
KEEP = 0.5          # fraction of groups kept
BATCH = 4
SLOW = pytest.mark.slow
CASES = [  # arch, variant, image size: VGG imagenet at 64x64 (its adaptive pool makes it 7x7)
    ("vgg16", "cifar", 32), ("vgg16_bn", "cifar", 32), ("resnet18", "cifar", 32),
    ("resnet18", "imagenet", 64),
    pytest.param("vgg16", "imagenet", 64, marks=SLOW),
    pytest.param("vgg16_bn", "imagenet", 64, marks=SLOW)]


def prunable(model):
    """(name, module) of every conv but the first and every linear but the last."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [x for x in layers if isinstance(x[1], nn.Conv2d)]
    linears = [x for x in layers if isinstance(x[1], nn.Linear)]
    return convs[1:] + linears[:-1]


def group_mask(weight):
    """Kept groups: one draw per (c_in, i, j) tap or input feature, shared by all outputs."""
    keep = torch.rand((1,) + weight.shape[1:]) < KEEP
    keep.view(-1)[:2] = torch.tensor([True, False])      # never all kept, never all pruned
    return keep.expand_as(weight).to(weight.dtype)


@torch.no_grad()
def random_model(arch, variant, masks):
    """-> (eval model, {name: mask}); masks: None, 'prune' (prune.custom_from_mask) or
    'zeros' (pruned groups zeroed in the weight, no mask tensors)."""
    with torch.device("meta"):                # no default init: every tensor is drawn below
        model = build(arch, 10 if variant == "cifar" else 1000, variant)
    model = model.to_empty(device="cpu").eval()
    chosen = {n: group_mask(m.weight) for n, m in prunable(model)} if masks else {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            keep = KEEP if name in chosen else 1.0      # He init over the kept fan-in
            m.weight.normal_(0.0, math.sqrt(2.0 / (m.weight[0].numel() * keep)))
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.zero_()
    modules = dict(model.named_modules())
    for name, mask in chosen.items():
        if masks == "prune":
            prune.custom_from_mask(modules[name], "weight", mask)
        else:
            modules[name].weight.mul_(mask)
    return model, chosen


def export_args(arch, variant, size, ckpt, out, *extra):
    return ["--arch", arch, "--variant", variant, "--image-size", str(size),
            "--checkpoint", str(ckpt), "--out", str(out), *extra]


def save_and_export(tmp_path, model, arch, variant, size, *extra):
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "model.safetensors"
    torch.save(model.state_dict(), ckpt)
    assert export_main(export_args(arch, variant, size, ckpt, out, *extra)) == 0
    return ckpt, out


def check_parity(out_path, model, size, device, path_choice, masked):
    """Run a fresh random batch through both; check values, argmax and each layer's path."""
    x = torch.randn(BATCH, 3, size, size)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.ptp(ref, axis=0).max() > 1e-2 * np.abs(ref).max(), "logits ignore the image"
    runtime = cupyprune.load(out_path, device=device, path_choice=path_choice)
    out = runtime(x.numpy())
    assert out.shape == ref.shape and out.dtype == np.float32
    err = rel_err(out, ref)
    print(f"rel_err {path_choice}: {err:.2e}")
    assert err <= TOL
    assert (cupyprune.backend.to_numpy(out).argmax(1) == ref.argmax(1)).all()
    paths = {s.node.name: s.op.describe()["path"] for s in runtime.layers()}
    want = {n: ("group" if n in masked and path_choice != "dense" else "dense") for n in paths}
    assert paths == want
    return err


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("masks", ["prune", None], ids=["group-masks", "no-masks"])
@pytest.mark.parametrize("arch,variant,size", CASES)
def test_parity(tmp_path, rng, device, arch, variant, size, masks):    # rng seeds torch
    model, masked = random_model(arch, variant, masks)
    _, out = save_and_export(tmp_path, model, arch, variant, size)
    for path_choice in ("dense", "group") if masks else ("dense",):
        check_parity(out, model, size, device, path_choice, masked)


@pytest.mark.parametrize("device", devices())
def test_zeros_instead_of_masks_select_group_path(tmp_path, rng, device):
    model, zeroed = random_model("resnet18", "cifar", "zeros")
    assert not any(k.endswith("_mask") for k in model.state_dict())
    _, out = save_and_export(tmp_path, model, "resnet18", "cifar", 32)
    check_parity(out, model, 32, device, "auto", zeroed)


def test_pattern_declared_and_labels(tmp_path):
    model, masked = random_model("vgg16_bn", "cifar", "prune")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    _, out = save_and_export(tmp_path, model, "vgg16_bn", "cifar", 32, "--pattern", "group",
                             "--labels", str(labels))
    meta = cupyprune.format.read_model_file(out)
    assert meta.pruning == {f"{n}.weight": {"pattern": "group"} for n in masked}
    assert meta.labels == [f"class {i}" for i in range(10)]
    assert meta.input_spec[0]["shape"] == [None, 3, 32, 32]
    check_parity(out, model, 32, "cpu", "auto", masked)


def run_cli(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_subprocess_from_tools_dir(tmp_path):
    model, masked = random_model("resnet18", "cifar", "prune")
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "model.safetensors"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, ckpt)   # a wrapped state dict
    proc = run_cli(["export.py", *export_args("resnet18", "cifar", 32, ckpt, out)], cwd=TOOLS)
    assert proc.returncode == 0, proc.stderr
    check_parity(out, model, 32, "cpu", "group", masked)


def test_wrong_key_is_one_line_error(tmp_path):
    state = random_model("resnet18", "cifar", None)[0].state_dict()
    state["layer2.0.downsample.0.weights"] = state.pop("layer2.0.downsample.0.weight")
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "model.safetensors"
    torch.save(state, ckpt)
    proc = run_cli(["tools/export.py", *export_args("resnet18", "cifar", 32, ckpt, out)],
                   cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "'layer2.0.downsample.0.weight'" in lines[0]
    assert os.listdir(tmp_path) == ["ckpt.pt"]          # nothing written, not even a temp file


def _bad_inputs(tmp_path):
    """(extra arguments or a replaced argument, text the one-line error must hold)."""
    return [
        ({"--checkpoint": str(tmp_path / "missing.pt")}, "no such checkpoint"),
        ({"--out": str(tmp_path / "no-dir" / "m.safetensors")}, "does not exist"),
        ({"--out": str(tmp_path)}, "is a directory"),
        ({"--num-classes": "100"}, "'fc.weight' has shape (10, 512), expected (100, 512)"),
        ({"--variant": "imagenet", "--num-classes": "10"}, "'conv1.weight' has shape"),
        ({"--image-size": "0"}, "--image-size must be a positive integer"),
        ({"--arch": "vgg16"}, "missing key 'features.0.weight'"),
        ({"--arch": "vgg16", "--image-size": "16"}, "image size 16 is too small for vgg16"),
        ({"--arch": "alexnet"}, "invalid choice: 'alexnet'"),
        ({"--pattern": "vector:2:4"}, "does not conform to its declared 'vector' pattern"),
        ({"--pattern": "stripes"}, "unknown pruning pattern 'stripes'"),
        ({"--labels": str(tmp_path / "ckpt.pt")}, "cannot read labels"),
        ({"--labels": str(tmp_path / "three.txt")}, "3 labels given for 10 classes"),
        ({"--config": str(tmp_path / "ckpt.pt")}, "--config is for vit and bert"),
        ({"--checkpoint": str(tmp_path / "three.txt")}, "cannot read the checkpoint"),
    ]


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    model, _ = random_model("resnet18", "cifar", "prune")
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    base = {"--arch": "resnet18", "--checkpoint": str(tmp_path / "ckpt.pt"),
            "--out": str(tmp_path / "m.safetensors")}
    for change, message in _bad_inputs(tmp_path):
        args = [s for kv in {**base, **change}.items() for s in kv]
        assert export_main(args) == 2, change
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "three.txt"]


def test_unpaired_prune_orig_is_an_error(tmp_path, capsys):
    model, _ = random_model("resnet18", "cifar", "prune")
    state = model.state_dict()
    del state["layer1.0.conv1.weight_mask"]
    torch.save(state, tmp_path / "ckpt.pt")
    args = export_args("resnet18", "cifar", 32, tmp_path / "ckpt.pt", tmp_path / "m.safetensors")
    assert export_main(args) == 2
    assert "'layer1.0.conv1.weight_orig' has no matching 'layer1.0.conv1.weight_mask'" in \
        capsys.readouterr().err


def test_graph_is_what_the_format_documents(tmp_path):
    """Node names are module paths; BN is its own node; no tensor is left out or added."""
    model, masked = random_model("resnet18", "imagenet", "prune")
    _, out = save_and_export(tmp_path, model, "resnet18", "imagenet", 64)
    meta = cupyprune.format.read_model_file(out)
    nodes = {n["name"]: n for n in meta.graph["nodes"]}
    assert meta.graph["outputs"] == ["logits"]
    assert nodes["conv1"]["attrs"] == {"stride": [2, 2], "padding": [3, 3], "dilation": [1, 1]}
    assert nodes["maxpool"]["attrs"] == {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}
    assert nodes["layer2.0.add"]["inputs"] == ["layer2.0.bn2", "layer2.0.downsample.1"]
    assert json.loads(json.dumps(meta.input_spec))[0]["normalization"]["mean"][0] == 0.485
    want = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    want = {k.replace("_orig", "") for k in want if not k.endswith("_mask")}
    assert set(meta.tensors) == want | {f"{n}.weight.mask" for n in masked}
