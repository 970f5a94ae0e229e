"""GPU check against torchvision itself: its VGG-16, VGG-16-BN and ResNet-18 (random init,
random BatchNorm statistics) go through tools/export.py's Python API (variant imagenet, 224x224)
and cupyprune on the GPU, paths dense and group, unmasked and with random group-wise masks on
every other conv; each output is compared with torchvision's on the GPU in fp32 (TF32 off).
It also checks that tools/archs has exactly torchvision's state-dict keys and shapes.

Run on the GPU machine (torchvision and CuPy are installed there), from the repo root:
    python3 tools/gpu_check_torchvision.py --out gpu_check.json
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (HERE, os.path.dirname(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

import cupyprune  # noqa: E402
from archs import build  # noqa: E402
from cupyprune.atomic import atomic_path  # noqa: E402
from export import export  # noqa: E402
from oneline import OneLineParser, check_out, parse_or_exit  # noqa: E402

ARCHS = ("vgg16", "vgg16_bn", "resnet18")
SIZE, BATCH, KEEP = 224, 2, 0.5


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def keys_match(arch, reference):
    """Our tools/archs module against torchvision's: same keys, same shapes."""
    with torch.device("meta"):
        ours = shapes(build(arch, 1000, "imagenet"))
    theirs = shapes(reference)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            print(f"  {arch}: key {key!r}: ours {ours.get(key)}, torchvision {theirs.get(key)}")
            return False
    return True


@torch.no_grad()
def torchvision_model(arch, masked):
    model = getattr(torchvision.models, arch)(weights=None).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    if masked:           # group-wise: one kept/pruned draw per (c_in, i, j) tap, all outputs
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        for conv in convs[1::2]:
            keep = torch.rand((1,) + conv.weight.shape[1:]) < KEEP
            prune.custom_from_mask(conv, "weight", keep.expand_as(conv.weight).float())
    return model


def rel_err(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def check(arch, masked, workdir):
    model = torchvision_model(arch, masked)
    path = os.path.join(workdir, f"{arch}.safetensors")
    export(arch, model.state_dict(), path, variant="imagenet", image_size=SIZE)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model.cuda()(x.cuda()).cpu().numpy()
    rows = []
    for path_choice in ("dense", "group"):
        runtime = cupyprune.load(path, device="gpu", path_choice=path_choice)
        out = cupyprune.backend.to_numpy(runtime(x.numpy()))
        paths = sorted({s.op.describe()["path"] for s in runtime.layers()})
        rows.append({"arch": arch, "masks": "group" if masked else "none", "path": path_choice,
                     "layer_paths": "+".join(paths), "rel_err": rel_err(out, ref),
                     "argmax_equal": bool((out.argmax(1) == ref.argmax(1)).all())})
    return rows


def parse_args(argv):
    parser = OneLineParser(prog="tools/gpu_check_torchvision.py",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args(argv)
    check_out(args.out)
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "image_size": SIZE, "batch": BATCH,
              "keys_match": {}, "rows": []}
    with tempfile.TemporaryDirectory() as workdir:
        for arch in ARCHS:
            reference = getattr(torchvision.models, arch)(weights=None)
            result["keys_match"][arch] = keys_match(arch, reference)
            for masked in (False, True):
                result["rows"].extend(check(arch, masked, workdir))
    print(f"{'arch':10s} {'masks':6s} {'path':6s} {'layer paths':12s} {'rel_err':>9s}  argmax")
    for r in result["rows"]:
        print(f"{r['arch']:10s} {r['masks']:6s} {r['path']:6s} {r['layer_paths']:12s} "
              f"{r['rel_err']:9.2e}  {'same' if r['argmax_equal'] else 'DIFFERENT'}")
    print("state-dict keys and shapes equal torchvision's:", result["keys_match"])
    with atomic_path(args.out, prefix=".gpu-check-") as tmp:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
