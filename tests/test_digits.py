"""The shipped real model (weights/digits_group50.safetensors) and the accuracy-table tool.

The golden test recomputes the model from the file's own tensors with torch.nn.functional in
float64 (masks applied, batch norm unfolded), read with the safetensors package, not cupyprune.
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import cupyprune
from cupyprune.backend import to_numpy
from conftest import ROOT, devices, rel_err

MODEL = os.path.join(ROOT, "weights", "digits_group50.safetensors")
RECORD = os.path.join(ROOT, "weights", "digits_group50.json")
PRUNED = ("features.3", "features.7", "features.10", "classifier.0")
DENSE = ("features.0", "classifier.2")
CONVS = ("features.0", "features.3", "features.7", "features.10")   # each + BN at index + 1
POOL_AFTER = ("features.3", "features.10")                         # max-pool 2x2
SAMPLE_IMAGES = "cupyprune.sample.inputs.image"
SAMPLE_LABELS = "cupyprune.sample.labels"


@pytest.fixture(scope="module")
def tensors():
    return load_file(MODEL)


@pytest.fixture(scope="module")
def model():
    return cupyprune.load(MODEL, device="cpu")


@pytest.fixture(scope="module", params=devices())
def device_model(request):
    return cupyprune.load(MODEL, device=request.param)


def torch_reference(t, x):
    """The digits CNN from the file's tensors, float64: (N, 1, 8, 8) -> logits (N, 10)."""
    def p(key):
        return torch.from_numpy(t[key].astype(np.float64))

    def weight(layer):
        w = p(f"{layer}.weight")
        mask = t.get(f"{layer}.weight.mask")
        return w if mask is None else w * torch.from_numpy(mask.astype(np.float64))

    h = torch.from_numpy(x.astype(np.float64))
    for conv in CONVS:
        bn = "features.{}".format(int(conv.split(".")[1]) + 1)
        h = F.conv2d(h, weight(conv), padding=1)
        h = F.batch_norm(h, p(f"{bn}.running_mean"), p(f"{bn}.running_var"), p(f"{bn}.weight"),
                         p(f"{bn}.bias"), training=False, eps=1e-5)
        h = F.relu(h)
        if conv in POOL_AFTER:
            h = F.max_pool2d(h, 2)
    h = torch.flatten(h, 1)                                            # (N, 64*2*2)
    h = F.relu(F.linear(h, weight("classifier.0"), p("classifier.0.bias")))
    return F.linear(h, weight("classifier.2"), p("classifier.2.bias")).numpy()


def test_shipped_file_is_small_and_labelled(model):
    assert os.path.getsize(MODEL) < 1_000_000
    assert model.labels == [str(d) for d in range(10)]
    spec = model.input_spec["image"]
    assert spec["shape"] == [None, 1, 8, 8] and spec["layout"] == "NCHW"


def test_sample_images_are_predicted(device_model, tensors):
    x, y = tensors[SAMPLE_IMAGES], tensors[SAMPLE_LABELS]
    assert x.shape == (16, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (16,) and y.dtype == np.int64
    logits = to_numpy(device_model(x))
    assert logits.shape == (16, 10) and logits.dtype == np.float32
    assert (logits.argmax(1) == y).mean() >= 0.8


def test_layers_report_group_at_half(model):
    layers = {s.node.name: s.op.describe() for s in model.layers()}
    assert set(layers) == set(PRUNED) | set(DENSE)
    for name in PRUNED:
        assert layers[name]["pattern"] == "group", name
        assert layers[name]["kept"] == pytest.approx(0.5, abs=0.02), name
        assert layers[name]["path"] == "group", name
    for name in DENSE:
        assert layers[name]["pattern"] == "dense", name


def test_output_matches_torch_reference(device_model, tensors):
    x = tensors[SAMPLE_IMAGES]
    ref = torch_reference(tensors, x)
    out = device_model(x)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert rel_err(out, ref) <= 1e-5


def test_record_matches_the_runtime_on_the_test_split(model, tensors):
    """The accuracy in weights/digits_group50.json is what the runtime gets from the file."""
    import digits

    with open(RECORD) as f:
        record = json.load(f)
    data = digits.load_data(record["seed"])
    assert data.sizes() == record["split_sizes"]
    acc = 100 * digits.evaluate_runtime(model, data.x_test, data.y_test)
    # the independent reference: torch's forward of the same tensors on the same split
    torch_pred = torch_reference(tensors, data.x_test.numpy()).argmax(1)
    torch_acc = 100 * float((torch_pred == data.y_test.numpy()).mean())
    assert acc == pytest.approx(torch_acc)
    assert acc == pytest.approx(record["test_accuracy_percent"]["pruned_cupyprune_cpu"])
    assert acc >= 95.0


def test_accuracy_table_quick(tmp_path):
    import accuracy_table

    accuracy_table.main(["--quick", "--out-dir", str(tmp_path)])
    with open(tmp_path / "accuracy.json") as f:
        result = json.load(f)
    requested = result["requested"]
    want = {(p, k) for p in requested["patterns"] for k in requested["keep"]}
    assert want == {(p, 0.5) for p in accuracy_table.PATTERNS}
    cells = {(c["pattern"], c["keep"]): c for c in result["cells"]}
    assert set(cells) == want
    assert 80 <= result["dense"]["accuracy_percent"] <= 100     # far above chance (10 classes)
    params = {"element": "", "vector": "2:4", "block": "4x4", "group": ""}
    one_image = 100 / result["split_sizes"]["test"]
    for (pattern, _), cell in cells.items():
        assert cell["kept_prunable_percent"] == pytest.approx(50.0)
        assert cell["pattern_params"] == params[pattern]
        for run in cell["per_seed"]:
            # the runtime's accuracy on the exported file equals torch's on the masked model
            assert run["accuracy_percent"] == pytest.approx(run["torch_accuracy_percent"],
                                                            abs=one_image)
            for layer in PRUNED:         # the runtime recognises what the tool declared
                assert run["runtime_layers"][layer]["pattern"] == pattern
    md = (tmp_path / "ACCURACY.md").read_text()
    assert md.count("\n| 50.00 |") == len(want)
