"""The GPU benchmark's host-side pieces, on the CPU: kernel-trace parsing, the resumable results
file, and the report's tables and goal verdicts computed from synthetic cells."""
import json

import pytest

import bench_report
from benchlib import kernels
from benchlib.results import ResultStore, merge

TRACE = {"traceEvents": [
    {"ph": "X", "cat": "kernel", "name": "gemm", "dur": 30.0},
    {"ph": "X", "cat": "kernel", "name": "gemm", "dur": 50.0},
    {"ph": "X", "cat": "kernel", "name": "softmax", "dur": 10.0},
    {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD", "dur": 4.0},
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 500.0},       # host: not counted
    {"ph": "i", "cat": "kernel", "name": "marker"},                         # not a span
]}


def test_kernel_trace_summary():
    events = kernels.device_events(TRACE)
    assert sorted(n for _, n, _ in events) == ["Memcpy DtoD", "gemm", "gemm", "softmax"]
    s = kernels.summarize(events, calls=2, top=2)
    assert s["kernel_sum_ms"] == pytest.approx(0.047)            # 94 us over 2 calls
    assert s["kernels_per_call"] == 2
    assert [k["name"] for k in s["top_kernels"]] == ["gemm", "softmax"]
    assert s["top_kernels"][0]["ms_per_call"] == pytest.approx(0.04)
    assert s["top_kernels"][0]["count_per_call"] == 1


def _cells():
    return {
        "overhead": [{"model": "m", "precision": "fp16", "batch": 1, "keep": 0.5,
                      "graph_ms": 0.25, "eager_ms": 3.0, "kernel_sum_ms": 0.2,
                      "kernels_per_call": 60, "torch_eager_ms": 3.3,
                      "torch_kernel_sum_ms": 0.4, "torch_kernels_per_call": 120}],
        "split": [{"model": "m", "precision": "fp16", "batch": 1, "keep": 0.5, "graph_ms": 0.26,
                   "replay_ms": 0.21, "queued_ms": 0.22, "bind_us": 12.0, "runner_us": 30.4,
                   "launch_us": 9.6, "call_us": 48.0,
                   "host_top": [{"function": "graph.py:60(__call__)", "us_per_call": 7.2,
                                 "calls_per_call": 1.0}]}],
        "memory": [{"model": "m", "precision": "fp16", "batch": 64, "impl": i, "peak_bytes": b}
                   for i, b in (("ours-dense", 200 << 20), ("ours-group", 150 << 20),
                                ("torch-eager", 100 << 20))],
        "compile": [{"model": "m", "precision": "fp16", "batch": 64, "compile_s": 20.0,
                     "torch_compile_ms": 1.1, "torch_compile_graphs_ms": 0.8,
                     "torch_eager_ms": 2.0, "ours_group_ms": 0.5,
                     "compile_rel_err": 1e-3},
                    {"model": "m", "precision": "fp32", "batch": 64, "compile_s": 20.0,
                     "torch_compile_ms": 3.0, "torch_eager_ms": 4.0, "ours_group_ms": 2.0,
                     "compile_rel_err": 1e-6}],
        "fused": [{"model": "m", "precision": "fp16", "batch": 64, "keep": 0.5,
                   "fused_ms": 0.8, "fused_kernels": 40, "apart_ms": 1.0, "apart_kernels": 60,
                   "torch_eager_ms": 2.0}],
        "profile": [{"model": "m", "precision": "fp16", "batch": 64, "impl": "ours-dense",
                     "kernel_sum_ms": 0.5, "kernels_per_call": 60,
                     "top_kernels": [{"name": "gemm", "ms_per_call": 0.3,
                                      "count_per_call": 10}]}],
        "models": [{"model": "m", "shape": "32", "pattern": p, "keep": k, "impl": i,
                    "precision": "fp16", "batch": 64, "median_ms": t, "kept_percent": 100 * k,
                    "rel_err": 1e-3, "paths_used": ["dense"]}
                   for p, k, i, t in (("dense", 1.0, "torch-eager", 2.6),
                                      ("group", 0.5, "ours-auto", 1.0),
                                      ("group", 0.5, "torch-eager", 2.6),
                                      ("vector", 0.5, "ours-auto", 2.5),     # another run's
                                      ("vector", 0.5, "torch-eager", 5.0))],  # slower torch
    }


def test_store_resumes_and_merges(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    store = ResultStore(str(a), {"gpu": "x"})
    for section, cells in _cells().items():
        for c in cells:
            store.add(section, c)
    again = ResultStore(str(a), {"gpu": "x"})
    assert again.has("memory", {"model": "m", "precision": "fp16", "batch": 64,
                                "impl": "ours-group"})
    assert not again.has("memory", {"model": "m", "precision": "fp32", "batch": 64,
                                    "impl": "ours-group"})
    other = ResultStore(str(b), {"gpu": "x"})
    other.add("overhead", dict(_cells()["overhead"][0], graph_ms=0.3))
    merge([str(a), str(b)], str(tmp_path / "m.json"))
    merged = json.loads((tmp_path / "m.json").read_text())["sections"]
    assert [c["graph_ms"] for c in merged["overhead"]] == [0.3]       # the later file wins
    assert len(merged["memory"]) == 3


def test_report_goals_from_cells(tmp_path):
    path = tmp_path / "r.json"
    store = ResultStore(str(path), {"gpu": "x"})
    for section, cells in _cells().items():
        for c in cells:
            store.add(section, c)
    out = tmp_path / "report.md"
    assert bench_report.main([str(path), "--out", str(out)]) == 0
    text = out.read_text()
    # each row against the torch-eager median of its own pattern's rows (one run)
    assert "| PyTorch: m group vs torch eager dense | fp16 | 50% | 2.60x (met, goal 1.30x) |" \
        in text
    assert "| vector | 50.0 | 2.500 | - | - | 5.000 | 2.00x | dense | 1e-03 |" in text
    assert "| torch.compile: m group vs torch.compile dense | fp16 | 50% | 2.20x (met, goal " \
        "1.00x) |" in text
    assert "m group vs torch.compile dense | fp32" not in text    # the goal is fp16's
    assert "| torch.compile: m group vs reduce-overhead dense | fp16 | 50% | 1.60x (met, " \
           "goal 1.00x) |" in text
    assert "| m | fp32 | 64 | 20 | 3.000 | - | 4.000 | 2.000 | 1.50x | - |" in text  # tabled
    assert "| m | fp16 | 64 | 20 | 1.100 | 0.800 | 2.000 | 0.500 | 2.20x | 1.60x |" in text
    # the model table's torch.compile figure, after the table (a blank line ends a table)
    assert ("| 2.00x | dense | 1e-03 |\n\ntorch.compile (default mode) of the dense model: 1.100 "
            "ms; ours group-wise 50% beside it: 0.500 ms (torch.compile / ours 2.20x).") in text
    assert "| batch 1: m end to end / kernel sum | fp16 | 50% | 1.25x (met, goal <= " \
           "1.30x) |" in text
    assert "| m | fp16 | 0.250 | 0.210 | 0.220 | 3.000 | 0.200 | 60 | 1.25x |" in text
    assert "| memory: m peak, group / dense | fp16 | 50% | 0.75x (met, goal <= 1.00x) |" \
        in text
    assert "| m | fp16 | 12 | 30 | 10 | 48 | 0.210 | `graph.py:60(__call__)` 7 |" in text
    assert "| m | fp16 | 64 | 1.000 | 60 | 0.800 | 40 | 1.25x | 2.000 | 2.50x |" in text
    for title in ("Batch-1 overhead", "Peak GPU memory", "torch.compile", "Where the time goes"):
        assert f"### {title}" in text


def test_junit_figures_tabulates_recorded_properties_with_outcomes(tmp_path):
    from junit_figures import markdown
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="t_ok"><properties>'
        '<property name="rel_err keep=0.5 path=group" value="3.1e-07"/></properties></testcase>'
        '<testcase name="t_bad"><properties><property name="rel_err" value="0.2"/></properties>'
        '<failure message="too large"/></testcase>'
        '<testcase name="t_none"/>'
        '</testsuite></testsuites>')
    lines = markdown(junit).splitlines()
    assert lines[2] == "| t_ok | passed | rel_err keep=0.5 path=group | 3.1e-07 |"
    assert lines[3] == "| t_bad | failed | rel_err | 0.2 |"
    assert len(lines) == 4          # a test that recorded nothing adds no row


def test_layer_goal_at_75_50_25_kept_or_the_nearest_measured(tmp_path):
    """75% and 25% where a file has them (0.9/r of that ratio), 80% and 30% where it does not."""
    path = tmp_path / "r.json"
    store = ResultStore(str(path), {"gpu": "x"})
    times = {("fp16", 0.8): 0.8, ("fp16", 0.75): 0.85, ("fp16", 0.5): 0.5, ("fp16", 0.3): 0.3,
             ("fp32", 0.3): 0.35, ("fp32", 0.25): 0.3}
    for (precision, keep), group_ms in times.items():
        for impl, ms in (("ours-dense", 1.0), ("ours-group", group_ms)):
            store.add("layers", {"layer": "conv512", "impl": impl, "precision": precision,
                                 "keep": keep, "graph": True, "median_ms": ms, "rel_err": 1e-6})
    out = tmp_path / "report.md"
    assert bench_report.main([str(path), "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| layer: conv512")]
    assert rows == [
        "| layer: conv512 group vs our dense | fp32 | 25% | 3.33x (not met, goal 3.60x) |",
        "| layer: conv512 group vs our dense | fp16 | 75% | 1.18x (not met, goal 1.20x) |",
        "| layer: conv512 group vs our dense | fp16 | 50% | 2.00x (met, goal 1.80x) |",
        "| layer: conv512 group vs our dense | fp16 | 30% | 3.33x (met, goal 3.00x) |",
    ]


def test_model_table_cells_by_precision():
    """`--precisions` of the cnn and transformer presets: only the named precisions' cells of a
    row are measured; the CSR baseline is an fp32 cell of pruned rows only."""
    from benchlib.models import wanted_cells
    assert wanted_cells("group") == [("ours-auto", "fp32"), ("ours-dense", "fp32"),
                                     ("torch-eager", "fp32"), ("ours-csr", "fp32"),
                                     ("ours-auto", "fp16"), ("ours-dense", "fp16"),
                                     ("torch-eager", "fp16")]
    assert wanted_cells("group", ["fp16"]) == [("ours-auto", "fp16"), ("ours-dense", "fp16"),
                                               ("torch-eager", "fp16")]
    assert ("ours-csr", "fp32") not in wanted_cells("dense")
