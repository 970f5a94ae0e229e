"""`cupyprune inspect`: one row per op with shapes, pattern, kept parameters and path.

Shapes are the model's, as the file's graph defines them: where a group-wise linear's producer
computes only the features it keeps (passes.compact_producers), the runtime's narrower width
is a note and the kept % column, never the shape."""
import json

import click
from safetensors import safe_open

from ..backend import resolve_device
from ..engine import load
from ..format.keys import META_VERSION
from ..inputs import sample_inputs
from .common import device_choice, format_table, one_line_errors, path_option, precision_option

HEADERS = ["layer", "op", "detail", "output", "pattern", "params", "kept %", "path"]


def _shape(s):
    return "x".join(str(d) for d in s)


def _format_version(path):
    """The file's format_version (the file was already read and checked by load)."""
    with safe_open(path, "np") as f:
        return f.metadata()[META_VERSION]


def _model_shapes(model, trace):
    """The trace's runtime output shapes -> the model's: a compacted linear's output, and the
    elementwise ops between it and its reader, get back the layer's full width."""
    full_width = {}                                    # value -> the model's last dimension
    alias = model.alias                                # a fused op's output -> its producer's
    shapes = []
    for step, shape in trace:
        shape = tuple(shape)
        op = step.op
        width = None
        if op.op_name == "linear":
            width = op.layer.fmask.shape[1]            # F (in, out): the model's out features
            width = width if width != shape[-1] else None
        elif not op.prunable:
            width = next((full_width[alias.get(v, v)] for v in step.inputs
                          if alias.get(v, v) in full_width), None)
        if width is not None:
            shape = shape[:-1] + (width,)
            full_width.update({v: width for v in step.node.outputs})
        shapes.append(shape)
    return shapes


def _fused(model, name, folded):
    """What a layer's epilogue fuses, in order (a folded batch norm first)."""
    out = ["bn"] if folded else []
    for fused in (model.fused.get(name), name in model.residual and "add", model.post.get(name)):
        if fused:
            out.append(fused)
    return out


def _layer_records(model, trace, all_ops):
    records = []
    for (step, _), shape in zip(trace, _model_shapes(model, trace)):
        if not step.op.prunable and not all_ops:
            continue
        d = step.op.describe()
        rec = {"name": step.node.name, "op": step.node.op, "detail": d.get("detail", ""),
               "output_shape": list(shape),
               "fused": _fused(model, step.node.name, step.node.name in model.folded)}
        if step.op.prunable:
            rec.update(pattern=d["pattern"], pattern_params=d["pattern_params"],
                       params=d["params"], kept=d["kept"], path=d["path"])
            if d.get("note"):
                rec["note"] = d["note"]
        records.append(rec)
    return records


def _row(rec):
    detail = " ".join([rec["detail"]] + [f"+{f}" for f in rec["fused"]]).strip()
    row = [rec["name"], rec["op"], detail, _shape(rec["output_shape"])]
    if "params" not in rec:
        return row + ["", "", "", ""]
    pattern = rec["pattern"] + (f" {rec['pattern_params']}" if rec["pattern_params"] else "")
    return row + [pattern, f"{rec['params']:,}", f"{100 * rec['kept']:.1f}", rec["path"]]


@click.command(name="inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--all-ops", is_flag=True, help="List every op, not only the prunable layers.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the per-layer table as one JSON object on stdout, for scripts.")
@device_choice(default="cpu")
@path_option
@precision_option
@one_line_errors
def inspect_cmd(model_path, all_ops, as_json, device, path_choice, precision):
    """Show MODEL's layers: op, the model's shapes (batch 1), pattern, kept %, execution path."""
    model = load(model_path, device=resolve_device(device, default="cpu"),
                 path_choice=path_choice, precision=precision)
    trace = []
    model.run(trace=trace, **{k: model.xp.asarray(v)
                              for k, v in sample_inputs(model.file.input_spec, 1).items()})
    records = _layer_records(model, trace, all_ops)
    prunable = [r for r in records if "params" in r]
    total = sum(r["params"] for r in prunable)
    kept = sum(r["params"] * r["kept"] for r in prunable)
    summary = {"model": model_path, "format_version": _format_version(model_path),
               "exporter": model.file.exporter, "inputs": list(model.graph.inputs),
               "device": model.device, "precision": precision, "path": path_choice,
               "layers": records, "prunable_params": total, "kept_params": int(round(kept)),
               "kept_fraction": kept / total if total else 1.0}
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"{model_path}: format v{summary['format_version']}, exporter "
               f"{model.file.exporter or '?'}; inputs {', '.join(model.graph.inputs)}; device "
               f"{model.device}, precision {precision}, path {path_choice}")
    click.echo(format_table(HEADERS, [_row(r) for r in records], align="lllllrrl"))
    click.echo(f"\nprunable parameters: {total:,}; kept {summary['kept_params']:,} "
               f"({100 * summary['kept_fraction']:.1f}%)")
    for r in prunable:
        if r.get("note"):
            click.echo(f"note  {r['name']}: {r['note']}")
