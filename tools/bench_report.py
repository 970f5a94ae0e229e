"""Render paper_bench results (JSON) as markdown tables and PNG plots for docs/BENCHMARKS.md.

    python tools/bench_report.py bench/results/h100/*.json --out docs/benchmarks_generated.md \\
        --plots docs/img

Every number in the output comes from the results files; nothing is typed in."""
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import deploy_report  # noqa: E402
from benchlib.markdown import ms, ratio, table, verdict_at_least  # noqa: E402
from benchlib.results import (REPORT_ERRORS, SECTION_KEYS, cell_key,  # noqa: E402
                              read_results, report_error)
from cupyprune.atomic import atomic_path  # noqa: E402
from oneline import OneLineParser, UsageError, check_out, run_tool  # noqa: E402


def load(paths):
    env, sections = {}, defaultdict(dict)
    for p in paths:
        doc = read_results(p)
        env = doc.get("environment", env)
        for name, cells in doc["sections"].items():
            for c in cells:
                sections[name][cell_key(c, SECTION_KEYS[name])] = c
    return env, {k: list(v.values()) for k, v in sections.items()}


def layer_tables(cells):
    """One table per (layer, precision): rows keep, columns impl (graph replay where timed)."""
    out = []
    by = defaultdict(dict)
    for c in cells:
        impl = c["impl"] + (" (graph)" if c.get("graph") else "")
        by[(c["layer"], c["precision"])][(c["keep"], impl)] = c
    for (layer, precision), d in sorted(by.items()):
        impls = sorted({i for _, i in d})
        keeps = sorted({k for k, _ in d})
        rows = []
        for k in keeps:
            get = lambda i: d.get((k, i), {}).get("median_ms")   # noqa: E731
            dense, group = get("ours-dense (graph)"), get("ours-group (graph)")
            rows.append([f"{100 * k:.0f}%"] + [ms(get(i)) for i in impls]
                        + [ratio(dense, group), ratio(get("torch-dense"), group)])
        errs = max(c.get("rel_err", 0) for c in d.values())
        out.append(f"#### {layer}, {precision}\n\n" + table(
            ["kept"] + impls + ["dense/group (graph)", "torch/group (graph)"], rows)
            + f"\n\nLargest relative error against float64 torch in this table: {errs:.1e}.\n")
    return "\n".join(out)


def step_tables(cells):
    out = []
    by = defaultdict(dict)
    for c in cells:
        by[(c["layer"], c["precision"])][(c["keep"], c["step"])] = c["median_ms"]
    for (layer, precision), d in sorted(by.items()):
        steps = sorted({s for _, s in d})
        keeps = sorted({k for k, _ in d})
        rows = [[f"{100 * k:.0f}%"] + [ms(d.get((k, s))) for s in steps] for k in keeps]
        out.append(f"#### {layer}, {precision}\n\n" + table(["kept"] + steps, rows) + "\n")
    return "\n".join(out)


def _compile_note(cell):
    """The model tables' torch.compile column, one figure per table (every row's model is the
    same dense one): from the compile preset, measured beside ours in its own process."""
    if not cell:
        return ""
    compiled, ours = cell["torch_compile_ms"], cell["ours_group_ms"]
    return (f"\ntorch.compile (default mode) of the dense model: {ms(compiled)} ms; ours "
            f"group-wise 50% beside it: {ms(ours)} ms "
            f"(torch.compile / ours {ratio(compiled, ours)}).\n")


def eager_medians(cells):
    """{(pattern, keep, impl): cell} of one model and precision -> {pattern: the median of the
    pattern's torch-eager cells}. Every row runs the same dense model in PyTorch, and a
    pattern's rows come from one run (one process), so the ratio of a row compares figures
    measured side by side even where patterns were re-measured at different times."""
    eager = defaultdict(list)
    for (pattern, _, impl), c in cells.items():
        if impl == "torch-eager":
            eager[pattern].append(c["median_ms"])
    return {p: float(np.median(v)) for p, v in eager.items()}


def model_tables(cells, compiled=()):
    out = []
    compiled = {(c["model"], c["precision"]): c for c in compiled}
    by = defaultdict(dict)
    for c in cells:
        by[(c["model"], c["precision"])][(c["pattern"], c["keep"], c["impl"])] = c
    for (model, precision), d in sorted(by.items()):
        rows = []
        torch_dense = eager_medians(d)
        for pattern, keep in sorted({(p, k) for p, k, _ in d}, key=lambda t: (t[0] != "dense",
                                                                              t[0], -t[1])):
            get = lambda i: d.get((pattern, keep, i), {})                  # noqa: E731
            auto = get("ours-auto")
            rows.append([pattern, f"{auto.get('kept_percent', 100):.1f}",
                         ms(auto.get("median_ms")), ms(get("ours-csr").get("median_ms")),
                         ms(get("ours-dense").get("median_ms")),
                         ms(get("torch-eager").get("median_ms")),
                         ratio(torch_dense.get(pattern), auto.get("median_ms")),
                         "+".join(auto.get("paths_used", [])),
                         f"{max(get(i).get('rel_err', 0) for i in ('ours-auto', 'ours-dense')):.0e}"])
        batch = next(iter(d.values()))["batch"]
        out.append(f"#### {model}, {precision}, batch {batch}\n\n" + table(
            ["pattern", "kept %", "ours (auto) ms", "ours CSR ms", "ours dense ms",
             "torch eager ms", "torch dense (median) / ours", "paths", "rel err"], rows) + "\n"
            + _compile_note(compiled.get((model, precision))))
    return "\n".join(out)


LINEAR_SHAPES = {"fc4096": (4096, 4096), "bert-ffn1": (768, 3072), "bert-ffn2": (3072, 768)}


def auto_rule_table(cells):
    """paths.gather_pays against every measured linear sweep point (graph replay): does the
    rule pick the faster of group-wise and dense?"""
    from cupyprune.paths import gather_pays
    from cupyprune.paths.group import ALIGN_ROWS
    t = {(c["layer"], c["impl"], c["precision"], c["keep"]): c["median_ms"]
         for c in cells if c.get("graph")}
    rows, right, total = [], 0, 0
    for (layer, impl, precision, keep), group in sorted(t.items()):
        if impl != "ours-group" or layer not in LINEAR_SHAPES or keep >= 1.0:
            continue
        dense = t.get((layer, "ours-dense", precision, keep))
        if dense is None:
            continue
        R, K = LINEAR_SHAPES[layer]
        T = -(-round(keep * R) // ALIGN_ROWS) * ALIGN_ROWS
        pick = "group" if gather_pays(R, T, K, precision) else "dense"
        best = "group" if group < dense else "dense"
        chosen = group if pick == "group" else dense
        total += 1
        right += pick == best
        if pick != best:
            rows.append([layer, precision, f"{100 * keep:.0f}%", pick, ms(chosen),
                         ms(min(group, dense)), f"{chosen / min(group, dense):.2f}x"])
    head = (f"The rule picked the faster path at {right} of {total} measured linear-layer "
            "points. Where it did not:\n\n")
    return head + table(["layer", "precision", "kept", "rule picks", "its ms", "best ms",
                         "slower by"], rows) + "\n"


# Target 1's kept ratios (75/50/25%), each followed by the sweep's nearest point, which files
# measured before the sweep had 25% and 75% carry instead; 0.9/r is the kept ratio's own.
LAYER_GOAL_KEEPS = ((0.75, 0.8), (0.5,), (0.25, 0.3))


def targets_table(sections):
    """The GPU-performance goals (docs/BENCHMARKS.md, "Goals, one by one"), each computed from
    the cells (graph replay for ours)."""
    lay = {(c["layer"], c["impl"], c["precision"], c["keep"], c.get("graph")): c["median_ms"]
           for c in sections.get("layers", [])}
    rows = []
    for layer in ("conv512", "bert-ffn1", "bert-ffn2"):
        for precision in ("fp32", "fp16"):
            for keeps in LAYER_GOAL_KEEPS:
                for keep in keeps:                   # the first of them the files measured
                    d = lay.get((layer, "ours-dense", precision, keep, True))
                    g = lay.get((layer, "ours-group", precision, keep, True))
                    if d and g:
                        rows.append([f"layer: {layer} group vs our dense", precision,
                                     f"{100 * keep:.0f}%", verdict_at_least(d / g, 0.9 / keep)])
                        break
    t = lay.get(("conv512", "torch-dense", "fp16", 0.5, False))
    g = lay.get(("conv512", "ours-group", "fp16", 0.5, True))
    if t and g:
        rows.append(["cuDNN: conv512 group vs torch cuDNN", "fp16", "50%",
                     verdict_at_least(t / g, 1.5)])
    by = defaultdict(dict)
    for c in sections.get("models", []):
        by[(c["model"], c["precision"])][(c["pattern"], c["keep"], c["impl"])] = c
    for model in sorted({c["model"] for c in sections.get("models", [])}):
        for precision, keep, target in (("fp16", 0.5, 1.3), ("fp16", 0.25, 2.0),
                                        ("fp32", 0.5, 1.2)):
            d = by.get((model, precision), {})
            t = eager_medians(d).get("group")
            g = d.get(("group", keep, "ours-auto"), {}).get("median_ms")
            if t and g:
                rows.append([f"PyTorch: {model} group vs torch eager dense", precision,
                             f"{100 * keep:.0f}%", verdict_at_least(t / g, target)])
    rows += deploy_report.target_rows(sections)
    return (table(["goal", "precision", "kept", "ratio of medians"], rows)
            + "\n\nThe PyTorch goal's figure is the median over the torch-eager cells of the "
            "model's group-wise rows in that precision (every row runs the same dense model, and "
            "a pattern's rows come from one run; eager fp16 is launch-bound and noisy, so the "
            "median is steadier than any one cell).\n")


def _line_plot(plt, series, title, path, log=False, hlines=()):
    """latency vs kept %, one line per series key; hlines: (label, ms) reference lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([100 * k for k, _ in pts], [t for _, t in pts], marker="o", label=label)
    for label, value in hlines:
        ax.axhline(value, ls="--", lw=1, label=label,
                   color="k" if "torch" in label else "grey")
    ax.set_xlabel("parameters kept (%)")
    ax.set_ylabel("latency (ms)")
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(sections, out_dir):
    """Latency vs kept for the layer sweeps (Figs. 11, 14), and per model (Figs. 7-10)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    made = []
    by = defaultdict(lambda: defaultdict(list))
    for c in sections.get("layers", []):
        impl = c["impl"] + (" (graph)" if c.get("graph") else "")
        by[(c["layer"], c["precision"])][impl].append((c["keep"], c["median_ms"]))
    for (layer, precision), series in sorted(by.items()):
        name = f"layer-{layer}-{precision}.png"
        _line_plot(plt, series, f"{layer}, {precision}", os.path.join(out_dir, name), log=True)
        made.append(name)
    mb = defaultdict(lambda: defaultdict(list))
    for c in sections.get("models", []):
        if c["impl"] == "ours-auto" and c["pattern"] != "dense":
            mb[(c["model"], c["precision"])][c["pattern"]].append((c["keep"], c["median_ms"]))
    for (model, precision), series in sorted(mb.items()):
        dense = [(f"dense, {c['impl']}", c["median_ms"]) for c in sections["models"]
                 if c["model"] == model and c["pattern"] == "dense"
                 and c["precision"] == precision]
        name = f"model-{model}-{precision}.png"
        _line_plot(plt, series, f"{model}, {precision} (ours, auto path)",
                   os.path.join(out_dir, name), hlines=dense)
        made.append(name)
    return made


def parse_args(argv):
    ap = OneLineParser(prog="tools/bench_report.py", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="paper_bench results files (later files win)")
    ap.add_argument("--out", required=True, help="markdown file to write")
    ap.add_argument("--plots", help="folder for PNG plots (needs matplotlib)")
    args = ap.parse_args(argv)
    check_out(args.out)
    if args.plots is not None and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        raise UsageError(f"--plots {args.plots} is a file: it names the folder for the plots")
    return args


def report_markdown(args):
    """The report's markdown (and the plots, written into args.plots)."""
    env, sections = load(args.results)
    parts = ["<!-- generated by tools/bench_report.py from " +
             ", ".join(os.path.relpath(p) for p in args.results) + " -->",
             "### Environment\n\n" + table(["key", "value"], sorted(env.items()))]
    parts.append("### GPU-performance goals\n\n" + targets_table(sections))
    if sections.get("layers"):
        parts.append("### Layer sweeps (paper Figs. 11, 14)\n\n" + layer_tables(sections["layers"]))
    if sections.get("layers"):
        parts.append("### The `auto` rule for linear layers\n\n" + auto_rule_table(
            sections["layers"]))
    if sections.get("steps"):
        parts.append("### Step breakdown (paper Figs. 12-13)\n\n" + step_tables(sections["steps"]))
    if sections.get("models"):
        parts.append("### Model tables (paper Tables 1-8)\n\n" + model_tables(
            sections["models"], sections.get("compile", ())))
    for section, title, render in (
            ("overhead", "Batch-1 overhead",
             lambda cells: deploy_report.overhead_table(cells, sections.get("split", ()))
             + "\n" + deploy_report.host_table(sections.get("split", ()))),
            ("memory", "Peak GPU memory", deploy_report.memory_table),
            ("compile", "torch.compile", deploy_report.compile_table),
            ("fused", "Epilogues inside the GEMM (cuBLASLt)", deploy_report.fused_table),
            ("profile", "Where the time goes (kernel breakdown, top kernels)",
             deploy_report.profile_tables)):
        if sections.get(section):
            parts.append(f"### {title}\n\n" + render(sections[section]))
    if args.plots:
        names = plots(sections, args.plots)
        rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.out)))
        parts.append("### Plots\n\n" + "\n".join(f"![{n}]({rel}/{n})" for n in names))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    """The CLI; returns the exit code (0, or 2 after printing `error: ...` on stderr)."""
    try:
        args = parse_args(argv)
        text = report_markdown(args)
    except (UsageError, *REPORT_ERRORS) as e:                # the plots' folder too
        print(f"error: {report_error(e)}", file=sys.stderr)
        return 2
    with atomic_path(args.out, prefix=".bench-report-") as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
