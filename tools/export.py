"""Export a trained (pruned) PyTorch checkpoint to a cupyprune model file.

    python tools/export.py --torchvision NAME | --hf DIR | --module PKG.MOD:FACTORY ...
        the generic exporter, `cupyprune export` (any model torch.export can trace)
    python tools/export.py --arch {vgg16,vgg16_bn,resnet18,vit,bert} --checkpoint CKPT.pt \
        --out MODEL.safetensors [--num-classes N] [--image-size S] [--variant imagenet|cifar] \
        [--config CONFIG.json] [--labels labels.txt] [--pattern P]
        the hand-written exporters of the five paper architectures (tools/exporters)

Every input it cannot use prints one line `error: ...` on stderr and exits with code 2; the
model file is written atomically, so a failed export leaves no file behind.
Python API: `export(arch, state_dict, out, ...)` and `main(argv)`.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (HERE, os.path.dirname(HERE)):        # tools/ (archs, exporters) and the repo root
    if _path not in sys.path:
        sys.path.insert(0, _path)

GENERIC = ("--torchvision", "--hf", "--module")
if __name__ == "__main__" and any(a.split("=")[0] in GENERIC for a in sys.argv[1:]):
    from cupyprune.cli.main import cli
    cli(["export", *sys.argv[1:]], prog_name="tools/export.py")
    sys.exit(0)

try:
    import torch  # noqa: E402,F401
except ImportError:
    if __name__ == "__main__":
        print("error: tools/export.py needs PyTorch: pip install 'cupyprune[export]'",
              file=sys.stderr)
        sys.exit(2)
    raise

from checkpoint import first_line, load_state_dict  # noqa: E402
from exporters.cnn import export_cnn  # noqa: E402
from exporters.errors import ExportError  # noqa: E402
from exporters.graph_builder import PATTERN_HELP  # noqa: E402
from oneline import OneLineParser, UsageError, check_out, run_tool  # noqa: E402

CNN_ARCHS = ("vgg16", "vgg16_bn", "resnet18")
HF_ARCHS = ("vit", "bert")
MODEL_SUFFIX = ".safetensors"


def _parser():
    p = OneLineParser(prog="tools/export.py", description=__doc__.splitlines()[0])
    p.add_argument("--arch", required=True, choices=CNN_ARCHS + HF_ARCHS)
    p.add_argument("--checkpoint", required=True, help="CKPT.pt: a state dict, or a dict "
                   "holding one under 'state_dict' or 'model'")
    p.add_argument("--out", required=True, help="the model file to write (.safetensors)")
    p.add_argument("--num-classes", type=int, help="default 10 (cifar), 1000 (imagenet)")
    p.add_argument("--image-size", type=int, help="default 32 (cifar), 224 (imagenet)")
    p.add_argument("--variant", choices=("imagenet", "cifar"),
                   help="CNN head and stem (default cifar); see tools/archs")
    p.add_argument("--config", help="vit/bert: the Hugging Face config.json")
    p.add_argument("--labels", help="a text file of class names, one a line")
    p.add_argument("--pattern", help=f"declare this pruning pattern for every masked weight "
                   f"({PATTERN_HELP}); default: the runtime infers it")
    return p


def read_labels(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"cannot read labels {path}: {first_line(e)}") from None


def check_args(args):
    """Options that cannot apply: a model file not named .safetensors, --variant for vit/bert.
    Fills in the default --variant."""
    if not args.out.endswith(MODEL_SUFFIX):
        raise ExportError(f"--out {args.out}: a model file must end in {MODEL_SUFFIX}")
    if args.variant is not None and args.arch in HF_ARCHS:
        raise ExportError(f"--variant is for the CNNs, not {args.arch}")
    args.variant = args.variant or "cifar"


def export(arch, state_dict, out, variant="cifar", num_classes=None, image_size=None,
           config=None, labels=None, pattern=None):
    """Write the model file `out` from a state dict {key: torch.Tensor}. labels: a list or None."""
    if arch in HF_ARCHS:
        if config is None:
            raise ExportError(f"--arch {arch} needs --config CONFIG.json")
        from exporters.hf import export_hf          # lazily: it imports transformers
        opts = {"num_classes": num_classes, "image_size": image_size, "labels": labels,
                "pattern": pattern}
        return export_hf(arch, state_dict, config, out,
                         **{k: v for k, v in opts.items() if v is not None})
    if config is not None:
        raise ExportError(f"--config is for vit and bert, not {arch}")
    return export_cnn(arch, state_dict, out, variant=variant, num_classes=num_classes,
                      image_size=image_size, labels=labels, pattern=pattern)


def main(argv=None):
    """The CLI; returns the exit code (0, or 2 after printing `error: ...` on stderr)."""
    try:
        args = _parser().parse_args(argv)
        check_out(args.out)
        check_args(args)
        labels = None if args.labels is None else read_labels(args.labels)
        state = load_state_dict(args.checkpoint)
        export(args.arch, state, args.out, variant=args.variant, num_classes=args.num_classes,
               image_size=args.image_size, config=args.config, labels=labels,
               pattern=args.pattern)
    except (ExportError, UsageError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
