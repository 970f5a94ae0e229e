"""docs/ACCURACY.md from the result of tools/accuracy_table.py (the dict it saves as
accuracy.json): the table in the paper's Tables 1-3 layout, how it was made, and a reading whose
every figure is computed from the result, so that a re-run keeps the text true."""
import statistics

COLUMNS = ("Parameters (%)", "Pattern", "Accuracy (%)", "Change of acc (%)",
           "Change per seed (%)", "Change vs control (%)", "Before fine-tune (%)")


def _signed(v):
    return "0.00" if round(v, 2) == 0 else f"{v:+.2f}"


def _row(*cells):
    return "| " + " | ".join(cells) + " |"


def _pattern_name(cell):
    return f"{cell['pattern']}-wise" + (f" {cell['pattern_params']}"
                                        if cell["pattern_params"] else "")


def _table(result):
    rows = [_row(*COLUMNS), _row(*["---"] * len(COLUMNS))]
    for c in result["cells"]:
        rows.append(_row(f"{c['kept_prunable_percent']:.2f}", _pattern_name(c),
                         f"{c['accuracy_percent']:.2f}", _signed(c["change_percent"]),
                         " / ".join(_signed(r["change_percent"]) for r in c["per_seed"]),
                         _signed(c["change_vs_control_percent"]),
                         f"{c['before_finetune_percent']:.2f}"))
    dense, control = result["dense"], result["dense_finetuned"]
    rows.append(_row("100", "dense", f"{dense['accuracy_percent']:.2f}", "0.0", "", "", ""))
    per_seed = [c["accuracy_percent"] - d["accuracy_percent"]
                for c, d in zip(control["per_seed"], dense["per_seed"])]
    rows.append(_row("100", "dense, fine-tuned as the cells (control)",
                     f"{control['accuracy_percent']:.2f}", _signed(statistics.mean(per_seed)),
                     " / ".join(map(_signed, per_seed)), "0.0", ""))
    return "\n".join(rows)


def _reading(result):
    n = result["split_sizes"]["test"]
    dense = [r["accuracy_percent"] for r in result["dense"]["per_seed"]]
    p = statistics.mean(dense) / 100
    se = 100 * (p * (1 - p) / n) ** 0.5
    control = result["dense_finetuned"]["accuracy_percent"] - statistics.mean(dense)
    lines = [
        f"- Noise: one test image is {100 / n:.2f} points, and the binomial standard error of "
        f"one accuracy near {100 * p:.1f}% on {n} images is about {se:.2f} points. Differences "
        f"of a few tenths between cells are within it.",
        f"- Extra training alone: the dense model fine-tuned for the same epochs moves by "
        f"{_signed(control)} points, so \"Change of acc\" mixes the pattern's cost with that "
        f"gain; \"Change vs control\" separates them."]
    for keep in result["requested"]["keep"]:
        cells = [c for c in result["cells"] if c["keep"] == keep]
        lo = min(cells, key=lambda c: c["change_vs_control_percent"])
        hi = max(cells, key=lambda c: c["change_vs_control_percent"])
        raw = min(cells, key=lambda c: c["before_finetune_percent"])
        lines.append(
            f"- Keeping {100 * keep:.0f}%: against the control the patterns land between "
            f"{_signed(lo['change_vs_control_percent'])} ({lo['pattern']}) and "
            f"{_signed(hi['change_vs_control_percent'])} ({hi['pattern']}). Right after "
            f"pruning, before fine-tuning, {raw['pattern']}-wise loses most "
            f"({raw['before_finetune_percent']:.2f}% left).")
    worse = [c for c in result["cells"] if c["change_vs_control_percent"] < -se]
    lines.append("- Cells more than one standard error below the control: "
                 + (", ".join(f"{_pattern_name(c)} at {100 * c['keep']:.0f}% "
                              f"({_signed(c['change_vs_control_percent'])})" for c in worse)
                    if worse else "none") + ".")
    runs = [r for c in result["cells"] for r in c["per_seed"]]
    differ = sum(r["accuracy_percent"] != r["torch_accuracy_percent"] for r in runs)
    lines.append(f"- The runtime's accuracy equals PyTorch's on the same masked weights in "
                 f"{len(runs) - differ} of {len(runs)} pruned models"
                 + ("." if not differ else "; the others differ by a prediction or two that "
                    "sit on a near-tie of two logits (float32 sums in another order)."))
    lines.append("- Scope: digits is an easy task and this CNN is small. The table compares the "
                 "patterns with one another under one recipe (same criterion, per-layer budget, "
                 "fine-tuning); it does not reproduce the paper's CIFAR-10 / Tiny-ImageNet "
                 "figures, whose pruning methods and schedules differ per pattern (paper "
                 "section 3.3). Latency is measured separately, by the benchmark.")
    return "\n".join(lines)


def render_markdown(result):
    e, sizes, m = result["epochs"], result["split_sizes"], result["machine"]
    layers = ", ".join(f"`{k}`" for k in result["prunable_layers"])
    by_keep = {c["keep"]: c["kept_all_weights_percent"] for c in result["cells"]}
    whole = ", ".join(f"{v:.1f}%" for v in by_keep.values())
    seeds = ", ".join(map(str, result["seeds"]))
    vector = ", ".join(c["pattern_params"] for c in result["cells"] if c["pattern"] == "vector")
    return f"""# Accuracy of the four pruning patterns, measured by the runtime

The paper's Tables 1-3 give, for each pruning pattern at about 75, 50 and 25% of the parameters
kept, the change of accuracy against the dense model. This table repeats that column on a model
the project trains on a CPU in seconds: the VGG-style CNN of `tools/digits.py` on scikit-learn's
8x8 handwritten digits. Every accuracy is cupyprune's: each pruned model is exported to a model
file and run by `cupyprune.load(path, device="cpu")` on the held-out test split.

- Figures are means over seeds {seeds}; each seed trains its own dense model.
- Change of acc: each seed's change against its own dense model, averaged (the paper's column).
- Change vs control: the same against the dense model fine-tuned exactly as the cells are.
- Before fine-tune: PyTorch's accuracy right after masking (batch-norm statistics still the
  dense model's).

{_table(result)}

Parameters (%): weights kept in the pruned layers ({layers}). The first conv and the last
linear stay dense, so of all conv and linear weights {whole} are kept.

## How it was made

- Command: `{result['command']}`
- Time: {result['runtime_s']:.0f} s on {m['cpus']} CPU cores, torch {m['torch']} on
  {m['torch_threads']} thread(s), Python {m['python']}, {m['platform']}.
- Data: `sklearn.datasets.load_digits` (1,797 images, 8x8, one channel); one stratified split
  drawn with seed {result['split_seed']}: {sizes['train']} train, {sizes['val']} validation
  (not used to choose anything), {sizes['test']} test. Pixels 0..16 are scaled to [0, 1], then
  standardised with the training split's mean and std.
- Training: Adam, batch {result['batch']}, deterministic kernels; dense {e['dense']} epochs at
  lr {result['lr']['dense']}; fine-tuning {e['finetune']} epochs at lr {result['lr']['finetune']}
  for every cell, with pruned weights put back to zero after every step.
- Pruning: `tools/pruning`, criterion {result['criterion']}, scope {result['scope']} (every pruned
  layer keeps the same fraction), on each layer's im2col weight matrix F (docs/FORMAT.md).
  Element-wise: single weights. Vector-wise: N:{result['vector_m']} along the reduction dim of
  each output ({vector}). Block-wise: {result['block'][0]}x{result['block'][1]} blocks of F.
  Group-wise: whole rows of F (one input tap for all outputs).
- Raw figures, per seed and per layer as the runtime reports them: `accuracy.json`, written
  beside this file by the same run.

## Reading

{_reading(result)}
"""
