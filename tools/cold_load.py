"""Cold load time of one or more runtime trees: each repeat is a fresh Python process that imports
`cupyprune` from the named tree and times `cupyprune.load(file, device=...)` (the first call, so
file reads, planning, uploads and kernel compilation from a warm disk cache all count).

    python tools/cold_load.py MODEL.safetensors --tree old=/tmp/old --tree new=. --device gpu \
        --repeat 5 --out cold-load.json

Trees alternate (old, new, old, new, ...) so that drift on the machine falls on both. Each tree
is imported with `python3 -P` and PYTHONPATH=TREE, so the working directory cannot shadow it.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import parse_or_exit, positive_int, run_tool  # noqa: E402
from benchlib.results import write_json  # noqa: E402
from trees import (TreeRunFailed, parse_tree_args, run_in_tree,  # noqa: E402
                   tree_parser)


PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import cupyprune
t1 = time.perf_counter()
model = cupyprune.load(sys.argv[1], device=sys.argv[2], precision=sys.argv[3])
if sys.argv[2] == "gpu":
    import cupy
    cupy.cuda.Device().synchronize()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "file": cupyprune.__file__}))
"""


def one_run(tree, path, device, precision):
    return run_in_tree(tree, PROBE, (path, device, precision), 600, "load failed")


def parse_args(argv):
    p = tree_parser("tools/cold_load.py", __doc__.splitlines()[0], "time")
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=positive_int, default=5)
    return parse_tree_args(p, argv, "write the timings here as JSON")


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    try:
        measure(args)
    except TreeRunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def measure(args):
    trees = args.trees
    runs = {name: [] for name, _ in trees}
    for i in range(args.repeat):
        for name, tree in trees:
            r = one_run(tree, args.model, args.device, args.precision)
            runs[name].append(r)
            print(f"{i + 1}/{args.repeat} {name}: import {r['import_s']:.2f} s, "
                  f"load {r['load_s']:.2f} s", flush=True)
    summary = {name: {"load_s_median": statistics.median(r["load_s"] for r in rs),
                      "load_s_min": min(r["load_s"] for r in rs),
                      "import_s_median": statistics.median(r["import_s"] for r in rs)}
               for name, rs in runs.items()}
    for name, s in summary.items():
        print(f"{name}: load median {s['load_s_median']:.3f} s (min {s['load_s_min']:.3f}), "
              f"import {s['import_s_median']:.3f} s")
    if args.out:
        record = {"model": os.path.basename(args.model), "device": args.device,
                  "precision": args.precision, "repeat": args.repeat,
                  "trees": dict(trees), "runs": runs, "summary": summary}
        write_json(record, args.out)


if __name__ == "__main__":
    sys.exit(run_tool(main))
