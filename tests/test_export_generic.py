"""The generic exporter on real torchvision and Hugging Face models: random weights, group-wise
masks on every conv and linear but the stem and the classifier (torch.nn.utils.prune) or none;
the written file, run by the NumPy backend on fresh inputs, against the module itself."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("transformers")

import cupyprune  # noqa: E402
from cupyprune.export import export_module, prune_module  # noqa: E402
from cupyprune.export.sources import hf_source  # noqa: E402
from export_zoo import HF, TORCHVISION, hf_inputs, hf_model, image, torchvision_model  # noqa: E402

TOLERANCE = 1e-4


def _relative(got, want):
    want = want.detach().double().numpy()
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def _check_layers(path, pruned):
    """Pruned files run their group-wise conv/linear layers compacted (`group` path); grouped
    convs run dense; unpruned files have no group-wise layer."""
    model = cupyprune.load(path, device="cpu")
    paths = {s.node.name: s.op.describe()["path"] for s in model.layers()}
    grouped = {s.node.name for s in model.layers() if getattr(s.op, "groups", 1) > 1}
    if pruned:
        compacted = [n for n, p in paths.items() if p == "group"]
        assert len(compacted) >= len(paths) - len(grouped) - 2, paths
    else:
        assert set(paths.values()) == {"dense"}, paths
    return model


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [True, False], ids=["group50", "dense"])
@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision(name, pruned, tmp_path, rng):
    size = TORCHVISION[name]
    module = torchvision_model(name, int(rng.integers(1 << 30)))
    if pruned:
        prune_module(module, "group", 0.5)
    path = str(tmp_path / f"{name}.safetensors")
    export_module(module, image(size, 1, rng), path)
    x = image(size, 3, rng)
    with torch.no_grad():
        want = module(x)
    model = _check_layers(path, pruned)
    assert _relative(model(x.numpy()), want) < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [True, False], ids=["group50", "dense"])
@pytest.mark.parametrize("kind", HF)
def test_hugging_face_folder(kind, pruned, tmp_path, rng):
    module, folder = hf_model(kind, int(rng.integers(1 << 30)))
    source = hf_source(folder)                      # from the save_pretrained folder
    if pruned:
        prune_module(source.module, "group", 0.5)
    path = str(tmp_path / f"{kind}.safetensors")
    export_module(source.module, source.example_inputs, path, labels=source.labels,
                  max_length=source.max_length)
    inputs = hf_inputs(kind, 3, rng)
    with torch.no_grad():
        want = source.module(**inputs).logits
    model = _check_layers(path, pruned)
    got = model(**{k: v.numpy() for k, v in inputs.items()})
    assert _relative(got, want) < TOLERANCE
    if not pruned:                                  # the folder's weights, untouched
        with torch.no_grad():
            assert _relative(got, module(**inputs).logits) < TOLERANCE


def test_pruned_by_zeros_is_compacted(tmp_path, rng):
    """A module pruned with zeros (no prune hooks) exports its group-wise layers compacted,
    and the file is smaller than the dense export."""
    module = torchvision_model("resnet18", int(rng.integers(1 << 30)))
    dense = tmp_path / "dense.safetensors"
    export_module(module, image(64, 1, rng), str(dense))
    prune_module(module, "group", 0.5)
    from torch.nn.utils import prune
    for sub in module.modules():
        if hasattr(sub, "weight_mask"):
            prune.remove(sub, "weight")             # zeros stay, the hooks go
    zeros = tmp_path / "zeros.safetensors"
    export_module(module, image(64, 1, rng), str(zeros))
    x = image(64, 2, rng)
    with torch.no_grad():
        want = module(x)
    model = _check_layers(str(zeros), True)
    assert _relative(model(x.numpy()), want) < TOLERANCE
    assert zeros.stat().st_size < 0.7 * dense.stat().st_size


def test_batch_and_sequence_are_free(tmp_path, rng):
    """Traced with batch 1 and 16 tokens, the file runs other batches and lengths."""
    module, folder = hf_model("bert", int(rng.integers(1 << 30)))
    source = hf_source(folder)
    path = str(tmp_path / "bert.safetensors")
    export_module(source.module, source.example_inputs, path, max_length=source.max_length)
    model = cupyprune.load(path, device="cpu")
    for batch, length in ((1, 5), (4, 23)):
        ids = torch.from_numpy(rng.integers(0, 120, (batch, length)))
        with torch.no_grad():
            want = module(input_ids=ids).logits
        assert _relative(model(input_ids=ids.numpy()), want) < TOLERANCE


def test_bottleneck_convs_compute_only_kept_channels(tmp_path, rng):
    """ResNet-50 group-wise: each bottleneck's 3x3 conv computes only the channels its 1x1
    conv keeps (no gather), and the model still matches PyTorch."""
    module = torchvision_model("resnet50", int(rng.integers(1 << 30)))
    prune_module(module, "group", 0.5)
    path = str(tmp_path / "r50.safetensors")
    export_module(module, image(64, 1, rng), path)
    model = cupyprune.load(path, device="cpu")
    notes = {s.node.name: s.op.describe().get("note", "") for s in model.layers()}
    assert "outputs compacted" in notes["layer1.0.conv2"]
    assert "input pre-compacted" in notes["layer1.0.conv3"]
    assert sum("input pre-compacted" in n for n in notes.values()) >= 16
    x = image(64, 2, rng)
    with torch.no_grad():
        want = module(x)
    assert _relative(model(x.numpy()), want) < TOLERANCE
