"""The four pruning patterns end to end: masks from tools/pruning keep the asked fraction and
conform (checked with the runtime's cupyprune.patterns), the runtime refuses masks that do not
conform to their declaration, and tools/prune.py turns every bad input into one line, exit 2."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cupyprune
from cupyprune.errors import ModelFileError
from cupyprune.patterns import (check_declared, infer_pattern, is_block, is_group, is_vector,
                                weight_to_f)
from conftest import ROOT, TOOLS
from cupyprune.export.pruning import (PATTERNS, KeepError, NMError, PruningError, ShapeError,
                     UnknownPatternError, default_prunable_keys, make_mask, prune_state_dict)

KEEPS = (0.75, 0.5, 0.25)
SHAPES = {"conv": (16, 8, 3, 3), "linear": (24, 32)}      # F: (72, 16) and (32, 24)
PARAMS = {"element": {}, "vector": {"n_m": 4}, "block": {"block": (4, 4)}, "group": {}}
PRUNE = os.path.join(TOOLS, "prune.py")


def f_mask(mask):
    """A PyTorch-layout 0/1 mask -> its bool F (R, K), through the runtime's layout."""
    return weight_to_f(mask.numpy()).astype(bool)


def unit_size(pattern, fm):
    return {"element": 1, "vector": 4, "block": 16, "group": fm.shape[1]}[pattern]


def conforms(pattern, fm, keep):
    if pattern == "vector":
        return is_vector(fm, round(keep * 4), 4)
    if pattern == "block":
        return is_block(fm, 4, 4)
    return is_group(fm) if pattern == "group" else True


@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", SHAPES)
def test_make_mask_keeps_the_fraction_and_conforms(kind, pattern, keep, rng):
    w = torch.from_numpy(rng.standard_normal(SHAPES[kind]).astype(np.float32))
    mask = make_mask(w, pattern, keep, **PARAMS[pattern])
    assert mask.shape == w.shape
    assert mask.dtype == w.dtype
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
    fm = f_mask(mask)
    assert abs(int(fm.sum()) - keep * fm.size) <= unit_size(pattern, fm)
    assert conforms(pattern, fm, keep)
    expected = {"element": ("element", {}), "group": ("group", {}),
                "block": ("block", {"block": [4, 4]}),
                "vector": ("vector", {"n": round(keep * 4), "m": 4})}[pattern]
    assert infer_pattern(fm) == expected


def test_make_mask_keeps_the_largest(rng):
    w = torch.from_numpy(rng.standard_normal((8, 12)))
    w[:, 3] *= 100                                   # input feature 3 = row 3 of F
    assert make_mask(w, "group", 1 / 12)[:, 3].all()
    assert make_mask(w, "element", 0.01).flatten().argmax() == w.abs().flatten().argmax()


@pytest.mark.parametrize("pattern", ("element", "block", "group"))
def test_global_scope_keeps_the_fraction_overall(pattern, rng):
    sd = {f"l{i}.weight": torch.from_numpy(rng.standard_normal(s) * 10 ** i)
          for i, s in enumerate([(16, 8, 3, 3), (32, 16, 3, 3), (24, 32)])}
    masks = prune_state_dict(sd, list(sd), pattern, 0.5, scope="global", **PARAMS[pattern])
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    biggest = max(unit_size(pattern, f_mask(m)) for m in masks.values())
    assert abs(kept - 0.5 * total) <= biggest
    for m in masks.values():
        assert 0 < m.sum() and conforms(pattern, f_mask(m), 0.5)


def test_lamp_scores():
    """Formula (4) as LAMP [5]: s_u over the sum of the scores at least as large."""
    from cupyprune.export.pruning.masks import lamp
    got = lamp(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(got, torch.tensor([1.0, 1 / 6, 2 / 5], dtype=torch.float64))


def test_global_scope_refuses_vector(rng):
    sd = {"a.weight": torch.ones(8, 8)}
    with pytest.raises(NMError, match="global"):
        prune_state_dict(sd, ["a.weight"], "vector", 0.5, scope="global")


@pytest.mark.parametrize("kwargs,error,text", [
    ({"pattern": "channel"}, UnknownPatternError, "unknown pruning pattern 'channel'"),
    ({"keep": 0}, KeepError, r"\(0, 1\]"),
    ({"keep": 1.5}, KeepError, r"\(0, 1\]"),
    ({"pattern": "vector", "n_m": 5}, ShapeError, "layer 'convX'.*vector size 5"),
    ({"pattern": "block", "block": (4, 5)}, ShapeError, "layer 'convX'.*block 4x5"),
    ({"pattern": "vector", "n_m": (3, 2)}, NMError, "3:2"),
    ({"pattern": "group", "n_m": (2, 4)}, NMError, "only to the vector pattern"),
    ({"criterion": "gradient"}, UnknownPatternError, "criterion 'gradient'"),
])
def test_make_mask_refuses_bad_requests(kwargs, error, text):
    args = {"pattern": "element", "keep": 0.5, **kwargs}
    with pytest.raises(error, match=text) as info:
        make_mask(torch.ones(16, 8, 3, 3), args.pop("pattern"), args.pop("keep"), name="convX",
                  **args)
    assert isinstance(info.value, (PruningError, ValueError))
    assert "\n" not in str(info.value)


def test_default_prunable_keys():
    from archs import build
    with torch.device("meta"):
        for arch, first, last in (("resnet18", "conv1.weight", "fc.weight"),
                                  ("vgg16_bn", "features.0.weight", "classifier.6.weight")):
            sd = build(arch, 10, "cifar").state_dict()
            keys = default_prunable_keys(sd)
            assert first not in keys and last not in keys
            assert all(sd[k].dim() in (2, 4) for k in keys)
            assert len(keys) == {"resnet18": 19, "vgg16_bn": 14}[arch]
    sd = {"embeddings.word_embeddings.weight": torch.ones(9, 4), "l1.weight": torch.ones(4, 4),
          "l1.bias": torch.ones(4), "ln.weight": torch.ones(4), "l2.weight": torch.ones(4, 4),
          "head.weight": torch.ones(2, 4)}
    assert default_prunable_keys(sd) == ["l1.weight", "l2.weight"]


# -- the runtime refuses masks that do not keep their declared pattern ---------------------------
def declared_mask(pattern, rng):
    w = torch.from_numpy(rng.standard_normal((16, 32)))                 # F (32, 16)
    args = {"vector": {"n_m": (2, 4)}, "block": {"block": (4, 4)}}.get(pattern, {})
    return f_mask(make_mask(w, pattern, 0.5, **args))


def spoil_group(fm):
    fm[np.flatnonzero(~fm.any(axis=1))[0], 0] = True                    # one stray element


def spoil_vector(fm):
    fm[np.flatnonzero(fm[:4, 0])[0], 0] = False                         # first run keeps 1 of 4


def spoil_block(fm):
    r, c = np.argwhere(fm)[0]                                           # a kept 4x4 block's corner
    fm[r:r + 2, c:c + 4] = False                                        # half of it pruned


@pytest.mark.parametrize("pattern,decl,spoil", [
    ("group", {"pattern": "group"}, spoil_group),
    ("vector", {"pattern": "vector", "n": 2, "m": 4}, spoil_vector),
    ("block", {"pattern": "block", "block": [4, 4]}, spoil_block),
])
def test_check_declared_refuses_nonconforming_masks(pattern, decl, spoil, rng):
    fm = declared_mask(pattern, rng)
    check_declared(fm, decl, "encoder.fc1")                             # conforms as made
    spoil(fm)
    with pytest.raises(ModelFileError, match=r"layer 'encoder\.fc1'.*does not conform"):
        check_declared(fm, decl, "encoder.fc1")


# -- tools/prune.py ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CIFAR ResNet-18 state dict (default init) in a .pt file."""
    from archs import build
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(build("resnet18", 10, "cifar").state_dict(), path)
    return path


def prune(*args):
    return subprocess.run([sys.executable, PRUNE, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def check_one_line_error(rc, stderr, text, out_dir):
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert text in stderr
    assert os.listdir(out_dir) == []                    # no output, no temporary file


# bad options, end to end in a fresh interpreter (about 2 s each: torch's import)
@pytest.mark.parametrize("args,text", [
    (["--pattern", "diagonal"], "invalid choice: 'diagonal'"),
    (["--pattern", "group", "--keep", "0"], "keep must be a fraction in (0, 1]"),
    (["--pattern", "group", "--keep", "1.5"], "keep must be a fraction in (0, 1]"),
    (["--pattern", "vector:3:5"], "layer 'layer1.0.conv1.weight': vector size 5"),
    (["--pattern", "block:3x3"], "layer 'layer1.0.conv1.weight': block 3x3"),
    (["--pattern", "vector:5:4"], "N:M pattern 5:4"),
])
def test_prune_cli_bad_input_is_one_line(args, text, checkpoint, tmp_path):
    r = prune("--arch", "resnet18", "--checkpoint", checkpoint, "--out", tmp_path / "p.pt", *args)
    check_one_line_error(r.returncode, r.stderr, text, tmp_path)


# more bad inputs, through prune.main in this process
@pytest.mark.parametrize("args,text", [
    (["--pattern", "vector:2-4"], "argument --pattern: must look like 2:4"),
    (["--pattern", "group", "--block", "4x4"], "--block applies only to --pattern block"),
    (["--pattern", "group:2"], "invalid choice: 'group:2'"),
    (["--pattern", "vector:2:4", "--n-m", "2:4"], "give the pattern's parameters once"),
    (["--pattern", "group", "--layers", "nothing-like-this"], "matches none"),
    (["--pattern", "group", "--layers", "("], "not a valid regular expression"),
    (["--pattern", "group", "--num-classes", "100"], "'fc.weight' has shape (10, 512)"),
    (["--pattern", "group", "--arch", "vgg16"], "missing key 'features.0.weight'"),
    (["--pattern", "group", "--arch", "bert"], "--config is needed"),
    (["--pattern", "group", "--checkpoint", "missing.pt"], "no such checkpoint file"),
])
def test_prune_main_bad_input_is_one_line(args, text, checkpoint, tmp_path, capsys):
    import prune as prune_cli
    defaults = {"--arch": "resnet18", "--checkpoint": str(checkpoint)}
    argv = [a for k, v in defaults.items() if k not in args for a in (k, v)]
    out = "p.safetensors" if "bert" in args else "p.pt"
    rc = prune_cli.main(argv + ["--out", str(tmp_path / out)] + args)
    check_one_line_error(rc, capsys.readouterr().err, text, tmp_path)


def test_prune_cli_writes_torch_prune_naming(checkpoint, tmp_path):
    out = tmp_path / "pruned.pt"
    r = prune("--arch", "resnet18", "--checkpoint", checkpoint, "--pattern", "group",
              "--keep", "0.5", "--out", out)
    assert r.returncode == 0, r.stderr
    sd, orig = torch.load(out), torch.load(checkpoint)
    assert torch.equal(sd["conv1.weight"], orig["conv1.weight"])       # first conv left dense
    assert torch.equal(sd["fc.weight"], orig["fc.weight"])             # classifier left dense
    masked = [k[:-len("_mask")] for k in sd if k.endswith("_mask")]
    assert masked == default_prunable_keys(orig)
    for k in masked:
        assert torch.equal(sd[k + "_orig"], orig[k]) and k not in sd
        fm = f_mask(sd[k + "_mask"])
        assert is_group(fm) and fm.mean() == 0.5


def test_prune_cli_exports_a_model_file(checkpoint, tmp_path):
    out = tmp_path / "pruned.safetensors"
    r = prune("--arch", "resnet18", "--checkpoint", checkpoint, "--pattern", "block:4x4",
              "--keep", "0.25", "--layers", "layer4", "--out", out)
    assert r.returncode == 0, r.stderr
    model = cupyprune.load(str(out), device="cpu", path_choice="block")
    pruned = {s.node.name: s.op.layer for s in model.layers() if s.op.layer.pattern != "dense"}
    assert sorted(pruned) == ["layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
                              "layer4.1.conv1", "layer4.1.conv2"]
    assert all(layer.path_name == "block" and layer.kept == 0.25 for layer in pruned.values())
    assert model.file.pruning["layer4.0.conv1.weight"] == {"pattern": "block", "block": [4, 4]}


def test_prune_older_pattern_spelling_gives_the_same_masks(checkpoint, tmp_path, capsys):
    """`--pattern vector --n-m 2:4` (the older spelling) prunes as `--pattern vector:2:4`, with
    a one-line note that names the newer spelling."""
    import prune as prune_cli
    common = ["--arch", "resnet18", "--checkpoint", str(checkpoint), "--layers", "layer4"]
    new, old = tmp_path / "new.pt", tmp_path / "old.pt"
    assert prune_cli.main(common + ["--pattern", "vector:2:4", "--out", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert prune_cli.main(common + ["--pattern", "vector", "--n-m", "2:4", "--out", str(old)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pattern vector:N:M" in err
    a, b = torch.load(new), torch.load(old)
    masks = [k for k in a if k.endswith("_mask")]
    assert masks and all(torch.equal(a[k], b[k]) for k in masks)
    assert all(f_mask(a[k]).mean() == 0.5 for k in masks)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["element", "vector:2:4", "block:4x4", "group"])
def test_pruned_resnet18_file_is_smaller_than_the_dense_one(checkpoint, tmp_path, pattern):
    """tools/prune.py at half the weights of every prunable layer, against tools/export.py's file
    of the unpruned checkpoint: masks packed or compacted (docs/FORMAT.md, "Masks in version 3"),
    so the pruned file holds about the kept values only."""
    import prune as prune_cli
    from export import export
    dense, pruned = tmp_path / "dense.safetensors", tmp_path / "pruned.safetensors"
    export("resnet18", torch.load(checkpoint), str(dense), variant="cifar")
    assert prune_cli.main(["--arch", "resnet18", "--checkpoint", str(checkpoint), "--pattern",
                           pattern, "--keep", "0.5", "--out", str(pruned)]) == 0
    ratio = pruned.stat().st_size / dense.stat().st_size
    assert ratio < 0.6, ratio                      # the first conv and the classifier stay dense
    model = cupyprune.load(str(pruned), device="cpu")
    kept = [s.op.layer.kept for s in model.layers() if s.op.layer.pattern != "dense"]
    assert len(kept) == 19 and all(k == 0.5 for k in kept)
