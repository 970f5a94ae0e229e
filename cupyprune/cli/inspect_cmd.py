"""`cupyprune inspect`: one row per op with shapes, pattern, kept parameters and path."""
import click

from ..backend import resolve_device
from ..engine import load
from ..inputs import sample_inputs
from .common import device_choice, format_table, one_line_errors, path_option, precision_option


def _shape(s):
    return "x".join(str(d) for d in s)


@click.command(name="inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--all-ops", is_flag=True, help="List every op, not only the prunable layers.")
@device_choice(default="cpu")
@path_option
@precision_option
@one_line_errors
def inspect_cmd(model_path, all_ops, device, path_choice, precision):
    """Show MODEL's layers: op, output shape (batch 1), pattern, kept %, execution path."""
    model = load(model_path, device=resolve_device(device, default="cpu"),
                 path_choice=path_choice, precision=precision)
    trace = []
    model.run(trace=trace, **{k: model.xp.asarray(v)
                              for k, v in sample_inputs(model.file.input_spec, 1).items()})
    rows, total, kept, notes = [], 0, 0.0, []
    for step, shape in trace:
        d = step.op.describe()
        if not step.op.prunable and not all_ops:
            continue
        if step.op.prunable:
            total += d["params"]
            kept += d["params"] * d["kept"]
            pattern = d["pattern"] + (f" {d['pattern_params']}" if d["pattern_params"] else "")
            row = [step.node.name, step.node.op, d.get("detail", ""), _shape(shape), pattern,
                   f"{d['params']:,}", f"{100 * d['kept']:.1f}", d["path"]]
            if d.get("note"):
                notes.append(f"{step.node.name}: {d['note']}")
        else:
            row = [step.node.name, step.node.op, d.get("detail", ""), _shape(shape), "", "", "",
                   ""]
        if step.node.name in model.folded:
            row[2] = (row[2] + " +bn").strip()
        name = step.node.name                               # what its epilogue fuses, in order
        for fused in (model.fused.get(name), name in model.residual and "add",
                      model.post.get(name)):
            if fused:
                row[2] = (row[2] + f" +{fused}").strip()
        rows.append(row)
    click.echo(f"{model_path}: format v1, exporter {model.file.exporter or '?'}; "
               f"inputs {', '.join(model.graph.inputs)}; device {model.device}, "
               f"precision {precision}, path {path_choice}")
    click.echo(format_table(["layer", "op", "detail", "output", "pattern", "params", "kept %",
                             "path"], rows, align="lllllrrl"))
    pct = 100.0 * kept / total if total else 100.0
    click.echo(f"\nprunable parameters: {total:,}; kept {int(round(kept)):,} ({pct:.1f}%)")
    for line in notes:
        click.echo(f"note  {line}")
