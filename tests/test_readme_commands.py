"""The README's block of hand-written exporters ("The paper's five architectures, by hand"), run
as written (one command after the
other, in one scratch folder) on checkpoints made here with the file names it uses: a user who
copies it must get model files that load, and the pruned one must equal PyTorch's masked model."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import torch

import cupyprune
from conftest import ROOT, TOOLS, rel_err

SECTION = "### The paper's five architectures, by hand"
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def readme_commands():
    """The command lines of the first bash block after SECTION (comments dropped)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _checkpoints(folder):
    """The inputs the block names: ckpt.pt (ResNet-18, CIFAR), vgg.pt (VGG-16-BN, ImageNet),
    bert.pt/bert.json and vit.pt/vit.json (small Hugging Face models)."""
    import transformers
    from archs import build
    torch.save(_drawn_resnet18(build).state_dict(), folder / "ckpt.pt")
    torch.save(build("vgg16_bn", 1000, "imagenet").state_dict(), folder / "vgg.pt")
    configs = {"bert": transformers.BertConfig(vocab_size=100, max_position_embeddings=32,
                                               num_labels=3, **SMALL),
               "vit": transformers.ViTConfig(image_size=16, patch_size=4, num_labels=5, **SMALL)}
    classes = {"bert": transformers.BertForSequenceClassification,
               "vit": transformers.ViTForImageClassification}
    for name, config in configs.items():
        torch.save(classes[name](config).state_dict(), folder / f"{name}.pt")
        config.to_json_file(folder / f"{name}.json")


def _drawn_resnet18(build):
    """A CIFAR ResNet-18 whose batch norms are not identities (drawn statistics and affine
    terms) and whose weights have He variance: a fold that skipped or misapplied a batch norm,
    or a layer that misread its input, moves the logits far beyond the test's tolerance
    (torchvision's default init leaves every batch norm at 1/sqrt(1 + eps), within it)."""
    import math
    model = build("resnet18", 10, "cifar").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _run(line, folder):
    argv = shlex.split(line)
    if argv[0] == "python":
        argv = [sys.executable, os.path.join(ROOT, argv[1])] + argv[2:]
    else:                    # the console script pip installed, as the user would run it
        assert argv[0] == "cupyprune", line
        script = shutil.which("cupyprune")
        argv = ([script] if script else
                [sys.executable, "-c", "from cupyprune.cli.main import cli; cli()"]) + argv[1:]
    env = dict(os.environ, CUPYPRUNE_DEVICE="cpu", PYTHONPATH=os.pathsep.join([ROOT, TOOLS]))
    return subprocess.run(argv, cwd=folder, capture_output=True, text=True, env=env, timeout=300)


def test_readme_export_prune_run_block(tmp_path, rng):          # rng seeds torch
    lines = readme_commands()
    assert len(lines) >= 8 and any("prune.py" in ln for ln in lines)
    _checkpoints(tmp_path)
    for line in lines:
        proc = _run(line, tmp_path)
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, line
    for name in ("resnet18", "vgg", "bert", "vit", "pruned", "bert-2of4"):
        assert cupyprune.load(tmp_path / f"{name}.safetensors", device="cpu").layers()
    # the pruned ResNet-18: half its prunable groups gone, and equal to the masked torch model
    from archs import build
    pruned = torch.load(tmp_path / "pruned.pt")          # torch.nn.utils.prune's naming
    masked = {k: v for k, v in pruned.items() if not k.endswith(("_orig", "_mask"))}
    for k in pruned:
        if k.endswith("_orig"):
            base = k[:-len("_orig")]
            masked[base] = pruned[k] * pruned[base + "_mask"]
    masks = [v for k, v in pruned.items() if k.endswith("_mask")]
    assert len(masks) == 19                       # every conv but the stem; not the classifier
    assert abs(sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks) - 0.5) < 0.01
    model = build("resnet18", 10, "cifar").eval()
    model.load_state_dict(masked)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.ptp(ref, axis=0).max() > 1e-2 * np.abs(ref).max()     # logits follow the input
    runtime = cupyprune.load(tmp_path / "pruned.safetensors", device="cpu")
    assert {s.op.describe()["path"] for s in runtime.layers()} == {"dense", "group"}
    assert rel_err(runtime(x), ref) <= 1e-5
