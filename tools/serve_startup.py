"""Time from a server process's start to its first answered inference request: `cupyprune
serve MODEL` by default, or any server command (a torch-based one, Triton) given with
--command, asked the same request (the model file's sample inputs, one row, binary tensors).

    python tools/serve_startup.py resnet18-group50.safetensors --precision fp16 --repeat 3 \\
        --out startup.json
    python tools/serve_startup.py resnet18-group50.safetensors --model resnet18 \\
        --command "python my_torch_server.py --port {port}" --out startup-torch.json

Each run starts a fresh process on a free loopback port, sends the request every 20 ms until
one is answered 200 (connection refused and 503 mean not yet), records the seconds since the
process was started, then stops it with SIGTERM. Rows: {"server", "run", "seconds"}, and
{"server", "median_s"}.
"""
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, ResultRows, UsageError, check_out,  # noqa: E402
                     parse_or_exit, positive_float, positive_int, run_tool)
from serve_client import SERVE, model_inputs, request_body  # noqa: E402

POLL_S = 0.02


def parse_args(argv):
    ap = OneLineParser(prog="tools/serve_startup.py", description=__doc__.split("\n")[0])
    ap.add_argument("model_file", metavar="MODEL", help="model file (.safetensors)")
    ap.add_argument("--out", required=True, help="results JSON (a list of rows)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="fresh processes timed")
    ap.add_argument("--command", default=None,
                    help="another server's command line, with {port} where its port goes")
    ap.add_argument("--model", default=None,
                    help="the model's name in the request URL (default: the file's stem)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--timeout", type=positive_float, default=600.0,
                    help="seconds a start may take before it counts as failed")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.model_file):
        raise UsageError(f"{args.model_file}: no such file")
    if args.command is not None and "{port}" not in args.command:
        raise UsageError("--command must hold {port}, where the server's port goes")
    check_out(args.out)
    return args


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args, name, port):
    if args.command is not None:
        return shlex.split(args.command.replace("{port}", str(port)))
    options = ["--precision", args.precision] + (["--device", args.device] if args.device
                                                 else [])
    return SERVE + [f"{name}={args.model_file}", "--port", str(port)] + options


def time_to_first_answer(command, url, body, headers, timeout_s):
    """Start `command`; -> seconds until `url` answers the request 200."""
    import httpx
    started = time.monotonic()
    log = tempfile.TemporaryFile()              # a pipe nobody reads could fill and block it
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        with httpx.Client(timeout=timeout_s) as client:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"the server exited with {proc.returncode}: "
                                       f"{log.read()[-1000:].decode(errors='replace')}")
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"no answer within {timeout_s:g} s")
                try:
                    if client.post(url, content=body, headers=headers).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:            # not listening yet
                    pass
                time.sleep(POLL_S)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    name = args.model or os.path.splitext(os.path.basename(args.model_file))[0]
    server = "command" if args.command else "cupyprune serve"
    body, headers = request_body(model_inputs(args.model_file, 1))
    rows, times = ResultRows(), []
    for run in range(args.repeat):
        port = _free_port()
        url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
        seconds = time_to_first_answer(_command(args, name, port), url, body, headers,
                                       args.timeout)
        times.append(seconds)
        rows.add({"server": args.command or server, "run": run, "seconds": seconds})
    rows.add({"server": args.command or server, "median_s": statistics.median(times)})
    rows.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
