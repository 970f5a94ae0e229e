"""`cupyprune bench`: time model files per path and precision; table, JSON and CSV out."""
import csv
import io
import itertools
import json
import sys

import click

from ..backend import resolve_device
from ..bench import CELL_KEYS, SCHEMA, bench_cell, environment
from ..engine import load
from ..precision import PRECISIONS, check_precision
from ..inputs import sample_inputs
from ..memory import check_batch_fits
from ..paths import PATH_CHOICES
from .common import (check_not_the_model, check_writable, device_option, format_table, graph_option,
                     one_line_errors, save_text_atomic)


def _csv(cells):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CELL_KEYS)
    w.writeheader()
    for c in cells:
        w.writerow({**c, "paths_used": "+".join(c["paths_used"])})
    return buf.getvalue()


def _check_outputs(json_path, csv_path, models):
    """Writable, named for what they hold (so never one file for both), and never a model file
    (`--csv w/*.safetensors` makes the first model the CSV's name)."""
    outs = [(opt, p) for opt, p in (("--json", json_path), ("--csv", csv_path)) if p is not None]
    for opt, p in outs:
        check_writable(p, opt, suffix="." + opt[2:])
        check_not_the_model(p, opt, models)


def _preflight(models, precisions, batch, device, cuda_graph):
    """Every precision runs on this device, every model loads and its synthetic inputs fit,
    before the first timing: a bad second model must not fail the run after the first. On the
    CPU a batch must also fit in memory, estimated from one input on the dense path."""
    for precision in precisions:
        check_precision(precision, device)
    for path in models:
        model = load(path, device=device, path_choice="dense", precision=precisions[0],
                     cuda_graph=cuda_graph)
        spec = model.file.input_spec
        check_batch_fits(model, lambda b: sample_inputs(spec, b), batch,
                         f"--batch {batch} for {path}")
        sample_inputs(spec, batch)
        del model


@click.command(name="bench")
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@click.option("--path", "paths", type=click.Choice(PATH_CHOICES), multiple=True,
              help="Path(s) to time; repeat the option for several. Default: dense and auto.")
@click.option("--precision", "precisions", type=click.Choice(tuple(PRECISIONS)), multiple=True,
              help="Precision(s) to time. Default: fp32.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Batch size of the synthetic inputs (built from each file's input spec).")
@click.option("--repeat", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed runs per cell.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed runs per cell before the timed ones.")
@click.option("--json", "json_path", type=click.Path(),
              help="Write all cells as JSON here (a name ending in .json), once every cell has "
                   "run.")
@click.option("--csv", "csv_path", type=click.Path(),
              help="Write all cells as CSV here (a name ending in .csv), once every cell has run.")
@device_option
@graph_option
@one_line_errors
def bench_cmd(models, paths, precisions, batch, repeat, warmup, json_path, csv_path, device,
              cuda_graph):
    """Time MODEL files: median and spread per path and precision (CUDA events on the GPU)."""
    _check_outputs(json_path, csv_path, models)
    device = resolve_device(device)
    cuda_graph = "auto" if cuda_graph is None else cuda_graph
    precisions = precisions or ("fp32",)
    _preflight(models, precisions, batch, device, cuda_graph)
    grid = list(itertools.product(models, paths or ("dense", "auto"), precisions))
    cells = []
    with click.progressbar(grid, label=f"benchmarking on {device}", file=sys.stderr,
                           hidden=not sys.stderr.isatty(),           # no stray line in logs
                           item_show_func=lambda g: g and f"{g[0]} {g[1]} {g[2]}") as bar:
        for model, path_choice, precision in bar:
            cells.append(bench_cell(model, path_choice, precision, batch, device, warmup, repeat,
                                    cuda_graph))
    rows = [[c["model"], c["path"], "+".join(c["paths_used"]), c["precision"], c["batch"],
             f"{c['median_ms']:.3f}", f"{c['p10_ms']:.3f}-{c['p90_ms']:.3f}",
             "-" if c["peak_bytes"] is None else f"{c['peak_bytes'] / 2**20:.1f}",
             "yes" if c["cuda_graph"] else "no"] for c in cells]
    click.echo(format_table(["model", "path", "paths used", "precision", "batch", "median ms",
                             "p10-p90 ms", "peak MiB", "graph"], rows, align="llllrrrrl"))
    if json_path is not None:
        doc = {"schema": SCHEMA, "environment": environment(device),
               "settings": {"batch": batch, "repeat": repeat, "warmup": warmup}, "cells": cells}
        save_text_atomic(json_path, json.dumps(doc, indent=1))
        click.echo(f"wrote {json_path}")
    if csv_path is not None:
        save_text_atomic(csv_path, _csv(cells))
        click.echo(f"wrote {csv_path}")
