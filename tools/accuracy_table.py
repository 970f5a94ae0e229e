"""The paper's accuracy column (Tables 1-3) on the digits CNN, every figure from the runtime.

For each seed: train the CNN dense, then for each pattern x kept fraction prune the prunable
layers (all but the first conv and the last linear) per layer, fine-tune with the mask held,
export to a model file and evaluate that file with cupyprune (CPU) on the held-out test split.

    python tools/accuracy_table.py                         # docs/ACCURACY.md, docs/accuracy.json
    python tools/accuracy_table.py --quick --out-dir DIR   # 1 seed, keep 0.5, 1 epoch (tests)
"""
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

import cupyprune
import digits
from accuracy_report import render_markdown
from cupyprune.patterns import describe
from oneline import can_create_in
from exporters.graph_builder import parse_pattern
from oneline import OneLineParser, non_negative_int, parse_or_exit, run_tool
from oneline import seed as seed_type
from cupyprune.export.pruning import default_prunable_keys, prune_state_dict
from cupyprune.format.keys import PRUNING_PATTERNS as PATTERNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEPS = (0.75, 0.5, 0.25)
VECTOR_M = 4             # N:4, the NVIDIA convention: keep 0.75/0.5/0.25 -> 3:4, 2:4, 1:4
BLOCK = (4, 4)           # divides F of every pruned layer: channel counts are multiples of 4
SCOPE = "layer"          # every layer keeps the same fraction, for every pattern alike
SEEDS = (0, 1, 2)
SAMPLES = 16


def pattern_args(pattern, keep):
    """-> (keyword arguments of prune_state_dict, the pattern as GraphBuilder declares it)."""
    if pattern == "vector":
        n = round(keep * VECTOR_M)
        return {"n_m": (n, VECTOR_M)}, f"vector:{n}:{VECTOR_M}"
    if pattern == "block":
        return {"block": BLOCK}, "block:{}x{}".format(*BLOCK)
    return {}, pattern


def runtime_eval(model, masks, pattern, data, path, exporter):
    """Export, load with cupyprune on the CPU, evaluate on the test split.
    -> (accuracy %, {layer: runtime's pattern description} for the layers it reports)."""
    digits.export_digits(model, masks, path, pattern, data.x_test[:SAMPLES],
                         data.y_test[:SAMPLES], mean=data.mean, std=data.std, exporter=exporter)
    rt = cupyprune.load(path, device="cpu")
    layers = {}
    for step in rt.layers():
        d = step.op.describe()
        layers[step.node.name] = {"pattern": d["pattern"], "params": d["pattern_params"],
                                  "kept_percent": 100 * d["kept"]}
    return 100 * digits.evaluate_runtime(rt, data.x_test, data.y_test), layers


def run_cell(dense, data, pattern, keep, seed, epochs, workdir, exporter):
    """Prune a copy of the dense model, fine-tune it, evaluate its file by the runtime."""
    model = copy.deepcopy(dense)
    state = model.state_dict()
    prunable = default_prunable_keys(state)
    kwargs, declared = pattern_args(pattern, keep)
    masks = prune_state_dict(state, prunable, pattern, keep, scope=SCOPE, **kwargs)
    digits.apply_masks(model, masks)
    before = 100 * digits.evaluate_torch(model, data.x_test, data.y_test)
    digits.train(model, data, epochs, seed + 1, masks=masks, lr=digits.FINETUNE_LR)
    path = os.path.join(workdir, f"{pattern}-{keep}-seed{seed}.safetensors")
    acc, layers = runtime_eval(model, masks, declared, data, path, exporter)
    return {
        "seed": seed, "accuracy_percent": acc,
        "torch_accuracy_percent": 100 * digits.evaluate_torch(model, data.x_test, data.y_test),
        "before_finetune_percent": before,
        "kept_prunable_percent": 100 * digits.kept_fraction(masks, state, prunable),
        "kept_all_weights_percent": 100 * digits.kept_fraction(masks, state,
                                                               digits.weight_keys(model)),
        "runtime_layers": layers,
    }


def run_dense(dense, data, seed, epochs, workdir, exporter):
    """-> (accuracy % of the dense model, of the dense model fine-tuned as the cells are)."""
    control = digits.train(copy.deepcopy(dense), data, epochs, seed + 1, lr=digits.FINETUNE_LR)
    return tuple(runtime_eval(m, {}, None, data,
                              os.path.join(workdir, f"{name}-seed{seed}.safetensors"),
                              exporter)[0]
                 for name, m in (("dense", dense), ("control", control)))


def summarise(pattern, keep, runs, dense_by_seed, control_by_seed):
    """One cell: means over seeds; each seed's change is paired with that seed's dense model
    (the paper's "change of acc") and with its dense model fine-tuned as long (the control)."""
    _, declared = pattern_args(pattern, keep)
    for run in runs:
        run["change_percent"] = run["accuracy_percent"] - dense_by_seed[run["seed"]]
        run["change_vs_control_percent"] = run["accuracy_percent"] - control_by_seed[run["seed"]]
    return {
        "pattern": pattern, "keep": keep,
        "pattern_params": describe(parse_pattern(declared)),
        "kept_prunable_percent": runs[0]["kept_prunable_percent"],
        "kept_all_weights_percent": runs[0]["kept_all_weights_percent"],
        **{k: statistics.mean(r[k] for r in runs)
           for k in ("accuracy_percent", "change_percent", "change_vs_control_percent",
                     "before_finetune_percent")},
        "per_seed": runs,
    }


OUTPUTS = ("ACCURACY.md", "accuracy.json")


def check_out_dir(path):
    """-> None, or why --out-dir cannot take the outputs: checked before the (long) run.
    A missing directory is made at the end, so its nearest existing ancestor must be a
    writable directory."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"--out-dir {path} is not a directory"
        for name in OUTPUTS:
            if os.path.isdir(os.path.join(path, name)):
                return f"--out-dir {path}: {name} in it is a directory"
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"--out-dir {path}: {ancestor} is not a directory"
    if not can_create_in(ancestor):
        return f"--out-dir {path}: directory {ancestor} is not writable"
    return None


def parse_args(argv):
    """Every option checked before the run: a bad one is one line `error: ...`, exit 2."""
    ap = OneLineParser(prog="tools/accuracy_table.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=None,
                    help="where ACCURACY.md and accuracy.json go (default: docs/)")
    ap.add_argument("--seeds", type=seed_type, nargs="+", default=list(SEEDS),
                    help="one dense training and one fine-tuning per cell for each seed")
    ap.add_argument("--split-seed", type=seed_type, default=digits.SEED)
    ap.add_argument("--epochs", type=non_negative_int, default=30, help="dense training epochs")
    ap.add_argument("--finetune-epochs", type=non_negative_int, default=10,
                    help="the same for every cell")
    ap.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    ap.add_argument("--keep", type=float, nargs="+", default=list(KEEPS))
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: seed 0, keep 0.5, 1 epoch each; needs --out-dir")
    args = ap.parse_args(argv)
    bad = [k for k in args.keep if not 1 / VECTOR_M <= k <= 1]
    if bad:
        ap.error(f"--keep {bad[0]}: kept fractions must lie in [{1 / VECTOR_M}, 1] "
                 f"(vector-wise keeps N of {VECTOR_M})")
    if args.quick:
        if args.out_dir is None:
            ap.error("--quick needs --out-dir: its figures must not replace docs/ACCURACY.md")
        args.seeds, args.keep, args.epochs, args.finetune_epochs = [args.seeds[0]], [0.5], 1, 1
    args.out_dir = args.out_dir or os.path.join(ROOT, "docs")
    problem = check_out_dir(args.out_dir)
    if problem:
        ap.error(problem)
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    command = "python tools/accuracy_table.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    data = digits.load_data(args.split_seed)
    cells = [(p, k) for k in args.keep for p in args.patterns]
    runs = {cell: [] for cell in cells}
    dense_by_seed, control_by_seed = {}, {}
    with tempfile.TemporaryDirectory(prefix="cupyprune-acc-") as workdir:
        for seed in args.seeds:
            dense = digits.train(digits.build_model(seed), data, args.epochs, seed)
            dense_by_seed[seed], control_by_seed[seed] = run_dense(
                dense, data, seed, args.finetune_epochs, workdir, command)
            _progress(f"seed {seed}: dense {dense_by_seed[seed]:.2f}%, dense fine-tuned as the "
                      f"cells are {control_by_seed[seed]:.2f}%", start)
            for i, (pattern, keep) in enumerate(cells, 1):
                run = run_cell(dense, data, pattern, keep, seed, args.finetune_epochs, workdir,
                               command)
                runs[(pattern, keep)].append(run)
                _progress(f"seed {seed} [{i}/{len(cells)}] {pattern:7s} keep {keep:.2f}: kept "
                          f"{run['kept_prunable_percent']:.2f}%  acc "
                          f"{run['accuracy_percent']:.2f}% "
                          f"({run['accuracy_percent'] - dense_by_seed[seed]:+.2f})", start)
    result = {
        "command": command,
        "seeds": args.seeds, "split_seed": args.split_seed, "split_sizes": data.sizes(),
        "epochs": {"dense": args.epochs, "finetune": args.finetune_epochs},
        "lr": {"dense": digits.LR, "finetune": digits.FINETUNE_LR}, "batch": digits.BATCH,
        "scope": SCOPE, "criterion": "magnitude", "vector_m": VECTOR_M, "block": list(BLOCK),
        "prunable_layers": default_prunable_keys(digits.build_model(0).state_dict()),
        "requested": {"patterns": args.patterns, "keep": args.keep},
        "dense": _over_seeds(dense_by_seed),
        # the dense model trained for the cells' fine-tuning epochs too: what extra training
        # alone does, so that it is not read as an effect of pruning
        "dense_finetuned": _over_seeds(control_by_seed),
        "cells": [summarise(p, k, runs[(p, k)], dense_by_seed, control_by_seed)
                  for p, k in cells],
        "runtime_s": round(time.perf_counter() - start, 1),
        "machine": {"cpus": os.cpu_count(), "torch_threads": digits.NUM_THREADS,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
    }
    markdown = render_markdown(result)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "accuracy.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out_dir, "ACCURACY.md"), "w") as f:
        f.write(markdown)
    _progress(f"wrote {args.out_dir}/ACCURACY.md and accuracy.json", start)
    return result


def _over_seeds(by_seed):
    return {"accuracy_percent": statistics.mean(by_seed.values()),
            "per_seed": [{"seed": s, "accuracy_percent": a} for s, a in by_seed.items()]}


def _progress(line, start):
    print(f"[{time.perf_counter() - start:6.1f} s] {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(run_tool(main))
