"""`cupyprune infer`: run a model file and show its top-k classes and latency (a table, or
one JSON object with --json)."""
import json
import sys

import click
import numpy as np

from .. import backend
from ..engine import load
from ..errors import InputError
from ..inputs import check_input, sample_inputs
from ..memory import check_batch_fits
from ..timing import summary, time_calls
from .common import (check_not_the_model, check_writable, device_option, format_table, graph_option,
                     one_line_errors, path_option, precision_option, save_npy_atomic)
from .load_input import read_inputs

DEFAULT_SAMPLE_BATCH = 4
DEFAULT_TOP_K = 3


def _choose_inputs(model, input_path, batch):
    """-> (inputs by name, true labels or None, a line saying where they came from)."""
    names = model.graph.inputs
    if input_path is not None:
        inputs = read_inputs(input_path, names)
        return inputs, None, f"{input_path}"
    shipped = model.file.sample_inputs()
    if shipped:
        have = len(next(iter(shipped.values())))
        labels = model.file.sample_labels()             # checked at load, one per input
        n = have if batch is None else batch
        if n > have:
            raise InputError(f"--batch {n}: the file ships only {have} sample inputs")
        inputs = {k: v[:n] for k, v in shipped.items()}
        return inputs, None if labels is None else labels[:n], \
            f"{n} sample inputs shipped in the file"
    n = DEFAULT_SAMPLE_BATCH if batch is None else batch
    check_batch_fits(model, lambda b: sample_inputs(model.file.input_spec, b), n, f"--batch {n}")
    return sample_inputs(model.file.input_spec, n), None, \
        f"{n} deterministic synthetic inputs (seed 0) from the input spec"


def _one_output(outputs):
    """infer shows one output (the logits); a graph of several is for `cupyprune.load`."""
    if isinstance(outputs, dict):
        raise InputError(f"the graph has {len(outputs)} outputs ({', '.join(outputs)}): infer "
                         f"shows a single output; run it from Python (cupyprune.load(...).run)")
    return outputs


def _check_options(input_path, batch):
    if input_path is not None and batch is not None:
        raise InputError(f"--batch {batch} applies to the sample inputs; with --input "
                         f"{input_path} the batch is that file's")


def _resolve_top_k(logits, top_k):
    """--top-k as given (at most the model's classes), or the default, capped at the classes
    (a 2-class model such as BERT on QQP shows its 2)."""
    classes = logits.shape[-1]
    if top_k is None:
        return min(DEFAULT_TOP_K, classes)
    if logits.ndim == 2 and top_k > classes:
        raise InputError(f"--top-k {top_k}: the model has only {classes} classes")
    return top_k


def _softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _name(model, k):
    labels = model.labels
    return str(labels[k]) if labels and k < len(labels) else str(k)


def _predictions(model, logits, labels, top_k):
    """(N, classes) logits -> one record per input: its top-k classes, most probable first,
    and its true class where the inputs came with labels."""
    probs = _softmax(logits.astype(np.float64))
    order = np.argsort(-probs, axis=-1)[:, :top_k]
    records = []
    for i, top in enumerate(order):
        rec = {"index": i, "top": [{"class": int(k), "label": _name(model, k),
                                    "probability": float(probs[i, k])} for k in top]}
        if labels is not None:
            rec["true"] = {"class": int(labels[i]), "label": _name(model, int(labels[i]))}
        records.append(rec)
    return records


def _prediction_rows(records):
    rows = []
    for rec in records:
        cells = " | ".join(f"{t['label']} {t['probability']:.3f}" for t in rec["top"])
        row = [rec["index"], rec["top"][0]["label"]]
        if "true" in rec:
            row.insert(1, rec["true"]["label"])
        rows.append(row + [cells])
    return rows


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--input", "input_path", type=click.Path(),
              help="Inputs: .npy for the first input (images NCHW float), or .npz by input name "
                   "(input_ids, token_type_ids, attention_mask). Default: the file's sample inputs, "
                   "else synthetic ones.")
@click.option("--output", "output_path", type=click.Path(),
              help="Write the raw outputs (logits) here as .npy (the name must end in .npy; "
                   "an existing file is replaced only once the run has succeeded).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="How many sample inputs to run when no --input is given.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help=f"Classes shown per input, most probable first (at most the model's classes). "
                   f"Default: {DEFAULT_TOP_K}, or all the classes of a model with fewer.")
@click.option("--repeat", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs for the latency (after warm-up).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the predictions, accuracy and latency as one JSON object on stdout.")
@device_option
@path_option
@precision_option
@graph_option
@one_line_errors
def infer(model_path, input_path, output_path, batch, top_k, repeat, as_json, device,
          path_choice, precision, cuda_graph):
    """Run MODEL (a cupyprune .safetensors file): print the top-k classes and the latency."""
    _check_options(input_path, batch)
    if output_path is not None:
        check_writable(output_path, "--output", suffix=".npy")
        check_not_the_model(output_path, "--output", [model_path])
    model = load(model_path, device=device, path_choice=path_choice, precision=precision,
                 cuda_graph="auto" if cuda_graph is None else cuda_graph)
    inputs, labels, origin = _choose_inputs(model, input_path, batch)
    for spec in model.file.input_spec:     # on the host, before the copy to the device
        if spec["name"] in inputs:
            check_input(spec, inputs[spec["name"]])
    if input_path is not None:             # before the pass whose activations might not fit
        first = inputs[model.graph.inputs[0]]
        check_batch_fits(model, lambda b: {k: v[:b] for k, v in inputs.items()}, len(first),
                         f"--input {input_path}")
    arrays = {k: model.xp.asarray(v) for k, v in inputs.items()}
    logits = backend.to_numpy(_one_output(model(**arrays)))
    top_k = _resolve_top_k(logits, top_k)
    if output_path is not None:         # before any printing: a closed pipe must not lose it
        save_npy_atomic(output_path, logits)
    groups = sum(1 for s in model.layers() if s.op.describe()["path"] == "group")
    if as_json:
        _print_json(model, model_path, origin, logits, labels, top_k, output_path,
                    _latency(model, arrays, repeat, quiet=True), groups)
        return
    click.echo(f"model:   {model_path}  ({len(model.steps)} ops, {len(model.layers())} prunable "
               f"layers, {groups} on the group-wise path)")
    click.echo(f"device:  {model.device} ({'CuPy' if model.device == 'gpu' else 'NumPy'}), "
               f"precision {precision}, path {path_choice}"
               + (", CUDA graph replay" if model.graph_runner is not None else ""))
    click.echo(f"inputs:  {origin}")
    click.echo("")
    _print_outputs(model, logits, labels, top_k)
    stats = _latency(model, arrays, repeat)
    n = len(logits)
    click.echo(f"latency: {stats['median_ms']:.3f} ms median for a batch of {n} "
               f"(p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f}, {stats['runs']} runs)")
    if output_path is not None:
        click.echo(f"wrote {output_path}  {logits.shape} {logits.dtype}")


def _latency(model, arrays, repeat, quiet=False):
    if sys.stderr.isatty() and not quiet:    # a large model on the CPU takes a while: say so
        click.echo(f"timing {repeat} runs after a warm-up...", err=True)
    return summary(time_calls(lambda: model(**arrays), model.xp, warmup=1, repeat=repeat))


def _print_json(model, model_path, origin, logits, labels, top_k, output_path, stats, groups):
    out = {"model": model_path, "ops": len(model.steps), "prunable_layers": len(model.layers()),
           "group_path_layers": groups, "device": model.device, "precision": model.precision,
           "cuda_graph": model.graph_runner is not None, "inputs": origin,
           "output_shape": list(logits.shape)}
    if logits.ndim == 2:
        out["predictions"] = _predictions(model, logits, labels, top_k)
        if labels is not None:
            out["accuracy"] = float((logits.argmax(-1) == labels).mean())
    out["latency_ms"] = {k[:-3]: stats[k] for k in ("median_ms", "p10_ms", "p90_ms")}
    out["latency_ms"]["runs"] = stats["runs"]
    out["batch"] = len(logits)
    if output_path is not None:
        out["output"] = output_path
    click.echo(json.dumps(out, indent=1))


def _print_outputs(model, logits, labels, top_k):
    """The top-k table (with true labels and the accuracy where the inputs came with them)."""
    if logits.ndim == 2:
        head = ["#", "predicted", f"top-{top_k} (softmax)"]
        if labels is not None:
            head.insert(1, "true")
        click.echo(format_table(head, _prediction_rows(_predictions(model, logits, labels,
                                                                     top_k))))
        if labels is not None:
            right = int((logits.argmax(-1) == labels).sum())
            click.echo(f"\naccuracy on these inputs: {right}/{len(labels)} "
                       f"({100.0 * right / len(labels):.1f}%)")
    else:
        click.echo(f"output shape {logits.shape}")
