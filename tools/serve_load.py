"""Serving throughput and latency: each model file behind its own `cupyprune serve`, loaded by
concurrent clients at each concurrency level; with --bench, `cupyprune bench` of the same file
at the server's batch limit beside it.

    python tools/serve_load.py --make models/ --precision fp16 --concurrency 1,8,64 \\
        --requests 3000 --max-batch 64 --bench --out serve.json
    python tools/serve_load.py a.safetensors b.safetensors ... --out serve.json

--make DIR builds (once) and measures ResNet-18 224x224 and BERT-base, each dense and
group-wise at 50% kept (tools/serve_models.py; needs torch and transformers).

A request carries --rows rows of the inputs `cupyprune bench` times (built from the file's input
spec: images of its size, 16 tokens for a token model), sent with the binary-data extension
(--json-body: as JSON text). Clients run in up to --client-procs processes on this machine, over
loopback; each connection first sends --warmup requests (connecting, filling the server's
graphs), then the timed --requests are shared by all connections.

--workers N runs N server processes on the port (each with its own batchers and copy of the
model). --workers and --rows take lists: every worker count gets a server, every row count and
concurrency level a load. The clients use aiohttp where installed, else httpx.

Rows (printed as JSON lines, written to --out at the end):
  {"kind": "load", "model", "concurrency", "requests", "rows", "workers", "client",
   "client_procs", "codes", "seconds", "requests_per_s",
   "rows_per_s", "p50_ms", "p99_ms", "mean_batch_rows", "refused_p50_ms", "refused_p99_ms"}
   (latencies of answered requests; mean_batch_rows: rows per model call, from the server's
   /metrics; refused_*: latencies of 503 answers, null when none: overload a server with a
   concurrency above --max-queue + --max-batch)
  {"kind": "bench", "model", "batch", "median_ms", "rows_per_s", "served_rows_per_s" (the best
   of the highest concurrency's rows), "served_vs_bench"}
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, ResultRows, UsageError, check_out,  # noqa: E402
                     parse_or_exit, positive_float, positive_int, run_tool)
from serve_client import (SERVE, ServerProcess, client_library, model_inputs,  # noqa: E402
                          request_body, run_load)

BENCH = SERVE[:-1] + ["bench"]


def parse_args(argv):
    ap = OneLineParser(prog="tools/serve_load.py", description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", metavar="MODEL", help="model files (.safetensors)")
    ap.add_argument("--make", metavar="DIR", default=None,
                    help="build ResNet-18 224x224 and BERT-base, dense and group-wise 50%%, "
                         "into DIR (kept there) and measure them after any MODEL")
    ap.add_argument("--out", required=True, help="results JSON (a list of rows)")
    ap.add_argument("--concurrency", default="1,8,64",
                    help="comma-separated concurrency levels (connections)")
    ap.add_argument("--requests", type=positive_int, default=2000,
                    help="timed requests per level")
    ap.add_argument("--rows", default="1",
                    help="rows per request (comma-separated: each is measured)")
    ap.add_argument("--warmup", type=positive_int, default=4,
                    help="untimed requests per connection before a level")
    ap.add_argument("--client-procs", type=positive_int, default=4,
                    help="client processes at most")
    ap.add_argument("--json-body", action="store_true",
                    help="JSON tensors instead of the binary-data extension")
    ap.add_argument("--device", default=None, help="cupyprune serve --device")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--path", default="auto")
    ap.add_argument("--max-batch", type=positive_int, default=64)
    ap.add_argument("--max-delay-ms", type=positive_float, default=2.0)
    ap.add_argument("--max-queue", type=positive_int, default=1024)
    ap.add_argument("--workers", default="1",
                    help="cupyprune serve --workers: server processes sharing the port "
                         "(comma-separated: a server for each)")
    ap.add_argument("--bench", action="store_true",
                    help="also run cupyprune bench at --max-batch and compare")
    ap.add_argument("--bench-repeat", type=positive_int, default=30)
    args = ap.parse_args(argv)
    args.levels = _positive_list("--concurrency", args.concurrency, "1,8,64")
    args.row_counts = _positive_list("--rows", args.rows, "1,8,32")
    args.worker_counts = _positive_list("--workers", args.workers, "1,4")
    for path in args.models:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    if not args.models and args.make is None:
        raise UsageError("no model: give MODEL files or --make DIR")
    if args.make is not None and not os.path.isdir(args.make):
        raise UsageError(f"--make {args.make}: not a directory")
    check_out(args.out)
    return args


def _positive_list(option, text, example):
    try:
        values = [int(c) for c in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"{option} {text!r}: expected positive integers such as {example}")
    return values


def _serve_options(args, workers):
    options = ["--precision", args.precision, "--path", args.path,
               "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
               "--max-queue", str(args.max_queue), "--workers", str(workers)]
    return options + (["--device", args.device] if args.device else [])


def _batch_totals(url, model):
    """(sum, count) of the server's batch-size histogram for `model`."""
    import httpx
    text = httpx.get(url + "/metrics", timeout=30).text
    values = {}
    for name in ("sum", "count"):
        found = re.search(rf'^cupyprune_batch_size_{name}{{model="{re.escape(model)}"}} (\S+)$',
                          text, re.M)
        values[name] = float(found.group(1)) if found else 0.0
    return values["sum"], values["count"]


def _load_row(url, model, body, headers, level, request_rows, workers, args):
    before = _batch_totals(url, model)
    result = run_load(url, model, body, headers, level, args.requests, args.client_procs,
                      args.warmup)
    after = _batch_totals(url, model)
    # the warm-up's calls are in the totals too: they ran at the same concurrency
    calls = after[1] - before[1]
    lat_ms = 1e3 * np.asarray(result["latencies"]) if result["latencies"] else np.zeros(1)
    answered = len(result["latencies"])
    return {"kind": "load", "model": model, "concurrency": level, "requests": args.requests,
            "rows": request_rows, "workers": workers, "client": client_library(),
            "client_procs": min(args.client_procs, level), "codes": result["codes"],
            "seconds": result["seconds"],
            "requests_per_s": answered / result["seconds"],
            "rows_per_s": answered * request_rows / result["seconds"],
            "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "mean_batch_rows": (after[0] - before[0]) / calls if calls else None,
            **_refused_percentiles(result["refused"])}


def _refused_percentiles(seconds):
    if not seconds:
        return {"refused_p50_ms": None, "refused_p99_ms": None}
    ms = 1e3 * np.asarray(seconds)
    return {"refused_p50_ms": float(np.percentile(ms, 50)),
            "refused_p99_ms": float(np.percentile(ms, 99))}


def _bench_row(path, model, served, args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        command = BENCH + [path, "--path", args.path, "--precision", args.precision,
                           "--batch", str(args.max_batch), "--repeat", str(args.bench_repeat),
                           "--json", out] + (["--device", args.device] if args.device else [])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            cell = json.load(f)["cells"][0]
    rows_per_s = args.max_batch / cell["median_ms"] * 1e3
    return {"kind": "bench", "model": model, "batch": args.max_batch,
            "median_ms": cell["median_ms"], "rows_per_s": rows_per_s,
            "served_rows_per_s": served, "served_vs_bench": served / rows_per_s}


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    rows = ResultRows()
    files = list(args.models)
    if args.make is not None:
        from serve_models import make_models
        files += make_models(args.make)
    for path in files:
        model = os.path.splitext(os.path.basename(path))[0]
        bodies = {n: request_body(model_inputs(path, n), binary=not args.json_body)
                  for n in args.row_counts}
        for workers in args.worker_counts:
            with ServerProcess([f"{model}={path}"], _serve_options(args, workers)) as server:
                for request_rows, (body, headers) in bodies.items():
                    for level in args.levels:
                        rows.add(_load_row(server.url, model, body, headers, level,
                                           request_rows, workers, args))
        if args.bench:
            top = max(args.levels)
            served = max(r["rows_per_s"] for r in rows.rows
                         if r.get("model") == model and r.get("concurrency") == top)
            rows.add(_bench_row(path, model, served, args))
    rows.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
