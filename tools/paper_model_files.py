"""The benchmark's eight model shapes as model files (random weights, group-wise 50% kept, through
the hand-written exporters), for `cupyprune bench` A/B runs of two versions of the runtime.

    python tools/paper_model_files.py --dir models/
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from benchlib.models import PRESETS, _export, _masked_state, _torch_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--only", help="comma-separated model names (default: all eight)")
    args = p.parse_args()
    only = set(args.only.split(",")) if args.only else None
    os.makedirs(args.dir, exist_ok=True)
    for preset in ("cnn", "transformer"):
        for name, family, arch, variant, size, classes, batch, _ in PRESETS[preset]:
            if only is not None and name not in only:
                continue
            model, cfg = _torch_model(family, arch, variant, size, classes)
            _, export_sd = _masked_state(model.state_dict(), "group", args.keep)
            out = os.path.join(args.dir, f"{name}.b{batch}.safetensors")
            with tempfile.TemporaryDirectory() as tmp:
                _export(family, arch, variant if family == "cnn" else None, size, classes,
                        export_sd, cfg, out, tmp)
            print(out, flush=True)


if __name__ == "__main__":
    main()
