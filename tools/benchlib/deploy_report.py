"""Markdown for the deploy and compile presets (benchlib/deploy.py): batch-1 overhead, peak
memory, kernel breakdown, torch.compile; and their rows of the goals table."""
from collections import defaultdict

from .markdown import ms, ratio, table, verdict_at_least, verdict_at_most

OVERHEAD_TARGET = 1.3            # end to end <= 1.3x the sum of kernel times, at batch 1


def mib(b):
    return "-" if b is None else f"{b / 2**20:.0f}"


def overhead_table(cells, split=()):
    split = {(c["model"], c["precision"]): c for c in split}
    rows = []
    for c in sorted(cells, key=lambda c: (c["model"], c["precision"])):
        s = split.get((c["model"], c["precision"]), {})
        rows.append([c["model"], c["precision"], ms(c["graph_ms"]), ms(s.get("replay_ms")),
                     ms(s.get("queued_ms")), ms(c["eager_ms"]),
                     ms(c["kernel_sum_ms"]), f"{c['kernels_per_call']:.0f}",
                     ratio(c["graph_ms"], c["kernel_sum_ms"]),
                     ms(c["torch_eager_ms"]), ms(c["torch_kernel_sum_ms"]),
                     ratio(c["torch_eager_ms"], c["torch_kernel_sum_ms"])])
    return ("Batch 1, group-wise at 50% kept, `--path auto`. Kernel sums are the GPU time of every "
            "kernel, copy and memset of one forward pass, traced with CUPTI (torch.profiler), "
            "ours from the CUDA-graph replays. 'Replay alone' is the captured graph without "
            "the call around it (binding, copies, Python); 'queued' is one call's share of 20 "
            "calls issued without waiting; both from the `split` section (- where not measured).\n\n" + table(
                ["model", "precision", "ours graph ms", "replay alone ms", "queued ms per call",
                 "ours eager ms", "ours kernel sum ms",
                 "kernels", "ours end to end / kernels", "torch eager ms",
                 "torch kernel sum ms", "torch end to end / kernels"], rows) + "\n")


def host_table(split):
    """Where a batch-1 call's host time goes (split cells that carry the host phases)."""
    rows = []
    for c in sorted((c for c in split if "call_us" in c), key=lambda c: (c["model"],
                                                                          c["precision"])):
        top = "; ".join(f"`{t['function']}` {t['us_per_call']:.0f}" for t in c["host_top"][:3])
        rows.append([c["model"], c["precision"], f"{c['bind_us']:.0f}", f"{c['runner_us']:.0f}",
                     f"{c['launch_us']:.0f}", f"{c['call_us']:.0f}", ms(c["replay_ms"]), top])
    if not rows:
        return ""
    return ("Host wall-clock of one batch-1 call's phases (medians of 200, the GPU drained "
            "before each): binding with the input checks, the graph runner (input copies, "
            "replay, output copies), the replay's launch alone, the whole call; beside them the "
            "replay's GPU time and cProfile's functions with the most own time (us per call).\n\n"
            + table(["model", "precision", "bind us", "runner us", "launch us", "call us",
                     "replay alone ms", "top host functions"], rows) + "\n")


def memory_table(cells):
    by = defaultdict(dict)
    for c in cells:
        by[(c["model"], c["precision"], c["batch"])][c["impl"]] = c
    rows = []
    for (model, precision, batch), d in sorted(by.items()):
        dense, group = (d.get(i, {}).get("peak_bytes") for i in ("ours-dense", "ours-group"))
        rows.append([model, precision, batch, mib(dense), mib(group),
                     "-" if not dense or not group else f"{group / dense:.2f}",
                     mib(d.get("torch-eager", {}).get("peak_bytes"))])
    return ("Peak GPU memory of one forward pass, weights included: ours is CuPy's pool after a "
            "run from an emptied pool plus the CUDA graph's private pool; PyTorch's is "
            "`max_memory_allocated`.\n\n" + table(
                ["model", "precision", "batch", "ours dense MiB", "ours group-wise 50% MiB",
                 "group / dense", "torch eager dense MiB"], rows) + "\n")


def profile_tables(cells):
    out = []
    for c in sorted(cells, key=lambda c: (c["model"], c["precision"], c["impl"])):
        rows = [[k["name"], ms(k["ms_per_call"]), f"{k['count_per_call']:.0f}"]
                for k in c["top_kernels"]]
        out.append(f"#### {c['model']}, {c['precision']}, batch {c['batch']}, {c['impl']}: "
                   f"{c['kernel_sum_ms']:.3f} ms of kernels, {c['kernels_per_call']:.0f} per "
                   f"pass\n\n" + table(["kernel", "ms per pass", "launches"], rows) + "\n")
    return "\n".join(out)


def compile_table(cells):
    rows = [[c["model"], c["precision"], c["batch"], f"{c['compile_s']:.0f}",
             ms(c["torch_compile_ms"]), ms(c.get("torch_compile_graphs_ms")),
             ms(c["torch_eager_ms"]), ms(c["ours_group_ms"]),
             ratio(c["torch_compile_ms"], c["ours_group_ms"]),
             ratio(c.get("torch_compile_graphs_ms"), c["ours_group_ms"])]
            for c in sorted(cells, key=lambda c: (c["model"], c["precision"]))]
    return ("`torch.compile` of the dense model in its default mode (Inductor, no CUDA graphs) "
            "and in mode `reduce-overhead` (Inductor's kernels replayed from CUDA graphs, as "
            "ours are; - where not measured), against ours group-wise at 50% kept on `auto`, "
            "in the same process.\n\n" + table(
                ["model", "precision", "batch", "compile s", "torch.compile ms",
                 "reduce-overhead ms", "torch eager ms", "ours group 50% ms", "compile / ours",
                 "reduce-overhead / ours"], rows) + "\n")


def fused_table(cells):
    rows = [[c["model"], c["precision"], c["batch"], ms(c["apart_ms"]),
             f"{c['apart_kernels']:.0f}", ms(c["fused_ms"]), f"{c['fused_kernels']:.0f}",
             ratio(c["apart_ms"], c["fused_ms"]), ms(c["torch_eager_ms"]),
             ratio(c["torch_eager_ms"], c["fused_ms"])]
            for c in sorted(cells, key=lambda c: (c["model"], c["precision"]))]
    return ("Group-wise 50% on `auto`: each conv's and linear's bias, residual add and ReLU "
            "inside cuBLASLt's GEMM, against the GEMM and our epilogue kernel apart "
            "(`CUPYPRUNE_CUBLASLT=0`), and PyTorch eager on the dense model, in one process.\n\n"
            + table(["model", "precision", "batch", "apart ms", "kernels", "in the GEMM ms",
                     "kernels", "apart / in the GEMM", "torch eager ms", "torch / ours"], rows)
            + "\n")


def target_rows(sections):
    """Rows (goal, precision, kept, verdict) for the torch.compile, batch-1 and memory goals."""
    rows = []
    stretch = [c for c in sections.get("compile", []) if c["precision"] == "fp16"]
    for c in sorted(stretch, key=lambda c: c["model"]):     # the torch.compile goal is fp16's
        rows.append([f"torch.compile: {c['model']} group vs torch.compile dense", c["precision"],
                     "50%", verdict_at_least(c["torch_compile_ms"] / c["ours_group_ms"], 1.0)])
        if c.get("torch_compile_graphs_ms") is not None:   # CUDA graphs on both sides
            rows.append([f"torch.compile: {c['model']} group vs reduce-overhead dense",
                         c["precision"], "50%", verdict_at_least(
                             c["torch_compile_graphs_ms"] / c["ours_group_ms"], 1.0)])
    for c in sorted(sections.get("overhead", []), key=lambda c: (c["model"], c["precision"])):
        rows.append([f"batch 1: {c['model']} end to end / kernel sum", c["precision"], "50%",
                     verdict_at_most(c["graph_ms"] / c["kernel_sum_ms"], OVERHEAD_TARGET)])
    by = defaultdict(dict)
    for c in sections.get("memory", []):
        by[(c["model"], c["precision"])][c["impl"]] = c.get("peak_bytes")
    for (model, precision), d in sorted(by.items()):
        if d.get("ours-dense") and d.get("ours-group"):
            rows.append([f"memory: {model} peak, group / dense", precision, "50%",
                         verdict_at_most(d["ours-group"] / d["ours-dense"], 1.0)])
    return rows
