"""GPU kernels of one forward pass, per runtime tree: which kernels a model file launches, how
many times and for how long, side by side for two trees (an older runtime and this checkout), to
find where a before/after difference in `cupyprune bench` comes from.

    python tools/kernel_profile.py MODEL.safetensors --tree old=/tmp/old --tree new=. \
        --precision fp16 --batch 64 --out kernels.json

Each tree runs in a fresh `python3 -P` process with PYTHONPATH=TREE. The forward pass is timed
as `cupyprune bench` does (CUDA graph where the model allows it), then recorded by PyTorch's
profiler (CUPTI: it sees every kernel in the process, CuPy's and cuBLAS's included, also inside
a replayed CUDA graph), over --passes passes. The table gives each kernel's launches and GPU
microseconds per pass, and the sum of kernel time per pass beside the CUDA-event median.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import parse_or_exit, positive_int, run_tool  # noqa: E402
from benchlib.results import write_json  # noqa: E402
from trees import (TreeRunFailed, parse_tree_args, run_in_tree,  # noqa: E402
                   tree_parser)


PROBE = r"""
import json, sys
import cupy, torch
from torch.profiler import ProfilerActivity, profile
import cupyprune
from cupyprune.inputs import sample_inputs
from cupyprune.timing import time_calls, summary

path, precision, batch, passes, graph, path_choice = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5], sys.argv[6]
torch.zeros(1, device="cuda")                       # one CUDA context, shared with CuPy
model = cupyprune.load(path, device="gpu", precision=precision, path_choice=path_choice,
                       cuda_graph={"auto": "auto", "off": False}[graph])
inputs = {k: cupy.asarray(v) for k, v in sample_inputs(model.file.input_spec, batch).items()}
times = summary(time_calls(lambda: model(**inputs), cupy, warmup=5, repeat=30))
cupy.cuda.Device().synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(passes):
        model(**inputs)
    cupy.cuda.Device().synchronize()
kernels = {}
for e in prof.events():
    if e.device_type.name != "CUDA":
        continue
    k = kernels.setdefault(e.name, [0, 0.0])
    k[0] += 1
    k[1] += e.time_range.elapsed_us()
print(json.dumps({"median_ms": times["median_ms"], "graph": model.graph_runner is not None,
                  "file": cupyprune.__file__,
                  "kernels": {n: {"launches": c / passes, "us": t / passes}
                              for n, (c, t) in kernels.items()}}))
"""


def profile_tree(tree, args):
    return run_in_tree(tree, PROBE, (args.model, args.precision, args.batch, args.passes,
                                     args.graph, args.path), 900, "profile failed")


def parse_args(argv):
    p = tree_parser("tools/kernel_profile.py", __doc__.splitlines()[0], "profile")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--path", default="auto", help="the runtime's path choice (auto, dense, ...)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--passes", type=positive_int, default=10)
    p.add_argument("--graph", choices=("auto", "off"), default="auto",
                   help="CUDA-graph replay as the runtime decides, or eager launches")
    return parse_tree_args(p, argv, "write the tables here as JSON")


def table(results):
    """{tree: profile} -> lines: per kernel, launches and us per pass under each tree, the
    kernels with the largest difference first."""
    names = list(results)
    kernels = sorted({k for r in results.values() for k in r["kernels"]})
    zero = {"launches": 0, "us": 0.0}

    def spread(k):
        us = [results[n]["kernels"].get(k, zero)["us"] for n in names]
        return max(us) - min(us)
    lines = ["  ".join(f"{n + ' launches':>14} {n + ' us':>10}" for n in names) + "  kernel"]
    for k in sorted(kernels, key=spread, reverse=True):
        cells = [results[n]["kernels"].get(k, zero) for n in names]
        lines.append("  ".join(f"{c['launches']:14.1f} {c['us']:10.1f}" for c in cells)
                     + f"  {k[:110]}")
    for n in names:
        r = results[n]
        total = sum(k["us"] for k in r["kernels"].values())
        count = sum(k["launches"] for k in r["kernels"].values())
        lines.append(f"{n}: {count:.0f} kernels, {total:.1f} us of kernels per pass, "
                     f"median pass {r['median_ms'] * 1000:.1f} us (graph {r['graph']})")
    return lines


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    try:
        results = {name: profile_tree(tree, args) for name, tree in args.trees}
    except TreeRunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(table(results)))
    if args.out:
        record = {"model": os.path.basename(args.model), "path": args.path,
                  "precision": args.precision,
                  "batch": args.batch, "passes": args.passes, "graph": args.graph,
                  "trees": dict(args.trees), "results": results}
        write_json(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
