"""Prune a trained checkpoint with one of the four patterns of paper section 3.2.

    python tools/prune.py --arch resnet18 --checkpoint ckpt.pt --pattern group --keep 0.5 \
        --out pruned.pt
    python tools/prune.py --arch vgg16_bn --checkpoint ckpt.pt --pattern vector:2:4 \
        --out vgg.safetensors

A `.pt` output is a state dict in torch.nn.utils.prune's naming: each pruned `<m>.weight`
becomes `<m>.weight_orig` (the trained weight) and `<m>.weight_mask` (float 0/1), which
tools/export.py reads. A `.safetensors` output is exported at once through tools/export.py's
`export()`, with the pattern declared in the file. Pruned by default: every conv and linear
weight but the first conv, the classifier and embeddings (pruning.default_prunable_keys);
--layers REGEX narrows that set. A checkpoint pruned before is folded (weight = orig * mask)
and pruned afresh.

The checkpoint must fit --arch (tools/checkpoint.py names the first key that does not), before
anything is pruned: CNNs against tools/archs (--variant, --num-classes); vit and bert against
the graph of tools/exporters/hf.py, key names and shapes with --config (a .safetensors output),
key names alone without it (a .pt output).

Every bad input prints one line `error: ...` on stderr and exits with code 2; outputs are
written to a temporary file beside them and renamed, so a failed run leaves no partial file.
"""
import argparse
import re
import sys

import torch

from archs import build
from checkpoint import check_keys, first_line, fold_pruning, load_state_dict, reparametrize
from cupyprune.atomic import atomic_path
from export import CNN_ARCHS, HF_ARCHS, export
from exporters.cnn import DEFAULTS
from exporters.errors import ExportError
from exporters.hf import check_checkpoint
from oneline import OneLineParser, UsageError, check_out, positive_int, run_tool
from cupyprune.export.pruning import (SCOPES, PruningError, default_prunable_keys,
                                      prune_state_dict)
from cupyprune.export.pruning.spec import PATTERN_SYNTAX, parse_pattern_spec
from cupyprune.export.pruning.units import check_keep, resolve_block, resolve_n_m

PT_SUFFIXES = (".pt", ".pth")
MODEL_SUFFIX = ".safetensors"


def _pair(text, sep):
    try:
        a, b = (int(v) for v in text.lower().split(sep))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 2{sep}4, got {text!r}") from None
    return a, b


def pattern_spec(text):
    """--pattern text -> (name, n_m, block) (cupyprune.export.pruning.spec); the same spelling
    as tools/export.py's --pattern."""
    try:
        return parse_pattern_spec(text)
    except PruningError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv):
    p = OneLineParser(prog="tools/prune.py", description=__doc__.splitlines()[0])
    p.add_argument("--arch", required=True, choices=CNN_ARCHS + HF_ARCHS)
    p.add_argument("--checkpoint", required=True, help="trained state dict (.pt)")
    p.add_argument("--pattern", required=True, type=pattern_spec, metavar="PATTERN",
                   help=f"{PATTERN_SYNTAX}: vector N:M (default N = round(keep * 4) of 4), "
                   f"block RxC on F (default 4x4)")
    p.add_argument("--keep", type=float, default=0.5, help="kept fraction in (0, 1]")
    # the older spelling, still accepted: --pattern vector --n-m 2:4, --pattern block --block 4x4
    vec = p.add_mutually_exclusive_group()
    vec.add_argument("--vector-size", type=int, help=argparse.SUPPRESS)
    vec.add_argument("--n-m", type=lambda s: _pair(s, ":"), help=argparse.SUPPRESS)
    p.add_argument("--block", type=lambda s: _pair(s, "x"), help=argparse.SUPPRESS)
    p.add_argument("--scope", choices=SCOPES, default="layer")
    p.add_argument("--layers", help="prune only the default prunable weights matching REGEX")
    p.add_argument("--variant", choices=("imagenet", "cifar"),
                   help="CNN head and stem, as tools/export.py (default cifar)")
    p.add_argument("--num-classes", type=positive_int,
                   help="CNN classes (default 10 cifar, 1000 imagenet)")
    p.add_argument("--config", help="vit/bert: the Hugging Face config.json (.safetensors output)")
    p.add_argument("--out", required=True, help=f"pruned state dict ({' or '.join(PT_SUFFIXES)}) "
                   f"or model file ({MODEL_SUFFIX})")
    return p.parse_args(argv)


def _old_spelling(args):
    """--n-m / --vector-size / --block and --pattern -> (n_m, block, whether the older
    options were used)."""
    pattern, n_m, block = args.pattern
    old_n_m = args.n_m or args.vector_size
    if old_n_m is not None and pattern != "vector":
        raise UsageError("--vector-size / --n-m apply only to --pattern vector")
    if args.block is not None and pattern != "block":
        raise UsageError("--block applies only to --pattern block")
    if (old_n_m is not None and n_m is not None) or (args.block is not None and block is not None):
        raise UsageError("give the pattern's parameters once, in --pattern (e.g. vector:2:4)")
    return n_m or old_n_m, block or args.block, old_n_m is not None or args.block is not None


def check_options(args):
    """Cheap checks before the checkpoint is read -> (n_m, block) for prune_state_dict.
    args.pattern becomes the pattern's name."""
    check_keep(args.keep)
    n_m, block, old = _old_spelling(args)
    args.pattern = args.pattern[0]
    if args.pattern == "vector":
        n_m = resolve_n_m(n_m, args.keep)
    block = resolve_block(block) if args.pattern == "block" else None
    if not args.out.endswith(PT_SUFFIXES + (MODEL_SUFFIX,)):
        raise UsageError(f"--out {args.out}: must end in {', '.join(PT_SUFFIXES)} or "
                         f"{MODEL_SUFFIX}")
    if (args.config is not None) != (args.arch in HF_ARCHS and args.out.endswith(MODEL_SUFFIX)):
        raise UsageError("--config is needed, and only used, to export vit or bert to "
                         f"{MODEL_SUFFIX}")
    if args.variant is not None and args.arch in HF_ARCHS:
        raise UsageError(f"--variant is for the CNNs, not {args.arch}")
    args.variant = args.variant or "cifar"
    check_out(args.out)
    if old:
        print("note: --n-m, --vector-size and --block are deprecated: write --pattern "
              "vector:N:M or --pattern block:RxC", file=sys.stderr)
    return n_m, block


def pattern_text(pattern, n_m, block):
    """The pattern as tools/export.py's --pattern declares it."""
    if pattern == "vector":
        return "vector:{}:{}".format(*n_m)
    if pattern == "block":
        return "block:{}x{}".format(*block)
    return pattern


def read_checkpoint(args):
    """-> plain {key: tensor}, checked against --arch where that can be done here."""
    tensors, _ = fold_pruning(load_state_dict(args.checkpoint))
    if args.arch in CNN_ARCHS:
        classes = args.num_classes or DEFAULTS[args.variant]["num_classes"]
        with torch.device("meta"):
            model = build(args.arch, classes, args.variant)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_keys(tensors, expected, f"{args.arch} ({args.variant}, {classes} classes)")
    else:
        check_checkpoint(args.arch, tensors, args.config)
    return {k: torch.from_numpy(v) for k, v in tensors.items()}


def select_keys(state_dict, regex):
    keys = default_prunable_keys(state_dict)
    if regex is None:
        return keys
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise UsageError(f"--layers {regex!r} is not a valid regular expression: {e}") from None
    chosen = [k for k in keys if pattern.search(k)]
    if not chosen:
        raise UsageError(f"--layers {regex!r} matches none of the {len(keys)} prunable weights")
    return chosen


def save_atomic(obj, path):
    """torch.save to a temporary file beside `path`, renamed onto it once complete."""
    try:
        with atomic_path(path, prefix=".prune-") as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:                 # torch's writer raises RuntimeError
        raise UsageError(f"cannot write {path}: {first_line(e)}") from None


def run(argv):
    args = parse_args(argv)
    n_m, block = check_options(args)
    state_dict = read_checkpoint(args)
    keys = select_keys(state_dict, args.layers)
    masks = prune_state_dict(state_dict, keys, args.pattern, args.keep, scope=args.scope,
                             n_m=n_m, block=block)
    pruned = reparametrize(state_dict, masks)
    if args.out.endswith(MODEL_SUFFIX):
        export(args.arch, pruned, args.out, variant=args.variant, num_classes=args.num_classes,
               config=args.config, pattern=pattern_text(args.pattern, n_m, block))
    else:
        save_atomic(pruned, args.out)
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    print(f"{args.out}: {args.pattern} pruning of {len(masks)} layers, {kept:.1%} kept")


def main(argv=None):
    try:
        run(sys.argv[1:] if argv is None else argv)
    except (UsageError, PruningError, ExportError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
