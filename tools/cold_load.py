"""Cold load time of one or more runtime trees: each repeat is a fresh Python process that imports
`cupyprune` from the named tree and times `cupyprune.load(file, device=...)` (the first call, so
file reads, planning, uploads and kernel compilation from a warm disk cache all count).

    python tools/cold_load.py MODEL.safetensors --tree old=/tmp/old --tree new=. --device gpu \
        --repeat 5 --out cold-load.json

Trees alternate (old, new, old, new, ...) so that drift on the machine falls on both. Each tree
is imported with `python3 -P` and PYTHONPATH=TREE, so the working directory cannot shadow it.
"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, UsageError, check_out, parse_or_exit,  # noqa: E402
                     positive_int, run_tool)

from cupyprune.atomic import atomic_path  # noqa: E402

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


class LoadFailed(Exception):
    """A tree could not load the file: one line, exit code 2."""


def one_run(tree, path, device, precision):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    done = subprocess.run([sys.executable, "-P", "-c", PROBE, path, device, precision], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LoadFailed(f"{tree}: load failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv):
    p = OneLineParser(prog="tools/cold_load.py", description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tree", action="append", required=True, metavar="NAME=DIR",
                   help="a runtime tree to time (repeatable)")
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=positive_int, default=5)
    p.add_argument("--out", help="write the timings here as JSON")
    args = p.parse_args(argv)
    args.trees = []
    for item in args.tree:
        name, sep, tree = item.partition("=")
        if not sep or not os.path.isdir(os.path.join(tree, "cupyprune")):
            raise UsageError(f"--tree {item!r}: expected NAME=DIR with DIR/cupyprune")
        args.trees.append((name, tree))
    if args.out is not None:
        check_out(args.out)
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    try:
        measure(args)
    except LoadFailed as e:
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
        with atomic_path(args.out) as tmp:
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1)


if __name__ == "__main__":
    sys.exit(run_tool(main))
