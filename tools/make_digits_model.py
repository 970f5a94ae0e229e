"""Build the shipped real model, weights/digits_group50.safetensors, and its record.

Trains the digits CNN dense, prunes it group-wise (paper section 4.1: whole rows of F) keeping
50% of every prunable layer (first conv and last linear stay dense), fine-tunes it with the mask
held, exports it, and evaluates the file BY THE RUNTIME (cupyprune, CPU) on the held-out test
split. The figures go to weights/digits_group50.json beside the model.

    python tools/make_digits_model.py            # about 15 s on 2 CPU cores
"""
import json
import os
import sys
import time

import digits
from export import MODEL_SUFFIX
from oneline import (OneLineParser, check_out, non_negative_int, parse_or_exit, run_tool,
                     seed)
from cupyprune.export.pruning import default_prunable_keys, prune_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "weights", "digits_group50.safetensors")
SAMPLES = 16             # held-out test images shipped in the file


def parse_args(argv):
    """Every option checked before the (15 s) run: a bad one is one line `error: ...`, exit 2."""
    ap = OneLineParser(prog="tools/make_digits_model.py", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=seed, default=digits.SEED)
    ap.add_argument("--epochs", type=non_negative_int, default=30, help="dense training epochs")
    ap.add_argument("--finetune-epochs", type=non_negative_int, default=10)
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of rows of F kept")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"the model file ({MODEL_SUFFIX}); its "
                    f"record goes beside it as .json")
    args = ap.parse_args(argv)
    if not 0 < args.keep <= 1:
        ap.error(f"--keep {args.keep}: the kept fraction must lie in (0, 1]")
    if not args.out.endswith(MODEL_SUFFIX):
        ap.error(f"--out {args.out}: a model file must end in {MODEL_SUFFIX}")
    check_out(args.out)                       # UsageError, as ap.error raises
    check_out(os.path.splitext(args.out)[0] + ".json")
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    command = "python tools/make_digits_model.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()

    data = digits.load_data(args.seed)
    model = digits.train(digits.build_model(args.seed), data, args.epochs, args.seed)
    dense_acc = digits.evaluate_torch(model, data.x_test, data.y_test)

    state = model.state_dict()
    prunable = default_prunable_keys(state)
    masks = prune_state_dict(state, prunable, "group", args.keep)
    digits.train(model, data, args.finetune_epochs, args.seed + 1, masks=masks,
                 lr=digits.FINETUNE_LR)
    pruned_acc = digits.evaluate_torch(model, data.x_test, data.y_test)

    digits.export_digits(
        model, masks, args.out, "group", data.x_test[:SAMPLES], data.y_test[:SAMPLES],
        mean=data.mean, std=data.std, exporter=f"tools/make_digits_model.py ({command})",
        description=(f"VGG-style CNN on scikit-learn digits (8x8, 1 channel), group-wise pruned "
                     f"to {args.keep:.0%} of rows of F in {len(prunable)} layers. Pixels 0..16 "
                     f"are scaled to [0, 1], then normalised with the mean/std of input_spec."))
    runtime_acc = digits.evaluate_runtime(args.out, data.x_test, data.y_test)
    elapsed = time.perf_counter() - start

    record = {
        "model": os.path.basename(args.out),
        "command": command,
        "seed": args.seed,
        "split_sizes": data.sizes(),
        "epochs": {"dense": args.epochs, "finetune": args.finetune_epochs},
        "pattern": "group",
        "pruned_layers": prunable,
        "kept_prunable_percent": 100 * digits.kept_fraction(masks, state, prunable),
        "kept_all_weights_percent": 100 * digits.kept_fraction(masks, state,
                                                               digits.weight_keys(model)),
        "test_accuracy_percent": {"dense_torch": 100 * dense_acc,
                                  "pruned_torch": 100 * pruned_acc,
                                  "pruned_cupyprune_cpu": 100 * runtime_acc},
        "file_bytes": os.path.getsize(args.out),
        "runtime_s": round(elapsed, 1),
    }
    record_path = os.path.splitext(args.out)[0] + ".json"
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    acc = record["test_accuracy_percent"]
    print(f"test split ({len(data.y_test)} images): dense {acc['dense_torch']:.2f}%  "
          f"group 50% torch {acc['pruned_torch']:.2f}%  "
          f"group 50% cupyprune {acc['pruned_cupyprune_cpu']:.2f}%")
    print(f"wrote {args.out} ({record['file_bytes']} bytes) and {record_path} in {elapsed:.1f} s")
    return record


if __name__ == "__main__":
    sys.exit(run_tool(main))
