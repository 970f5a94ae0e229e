"""What the serving measurements share: starting `cupyprune serve` as a child process on a free
loopback port, building Open Inference Protocol request bodies from a model file's input spec
(the inputs `cupyprune bench` times), and a bounded load of concurrent clients spread over
processes (one Python process cannot both drive and answer thousands of requests a second)."""
import asyncio
import contextlib
import json
import multiprocessing
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

SERVE = [sys.executable, "-c", "from cupyprune.cli.main import cli; cli()", "serve"]
URL_LINE = re.compile(r"http://[0-9.]+:[0-9]+")


class ServerProcess:
    """`cupyprune serve FILES --port 0 ...` as a child; `url` once it prints its address.
    Stopped with SIGTERM (it drains), killed if it does not exit in `stop_s`."""

    def __init__(self, files, options=(), startup_s=600.0, stop_s=60.0):
        self.started = time.monotonic()
        self.log = tempfile.TemporaryFile()      # a pipe nobody reads could fill and block it
        self.proc = subprocess.Popen(SERVE + list(files) + ["--port", "0", *options],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.stop_s = stop_s
        line = _read_line(self.proc, startup_s)
        found = URL_LINE.search(line or "")
        if found is None:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"cupyprune serve did not start: {line!r} "
                               f"{self.log.read()[-2000:].decode(errors='replace')}")
        self.url = found.group(0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=self.stop_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _read_line(proc, timeout_s):
    """The child's first stdout line, or None when it exits or `timeout_s` passes first."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return None
    return proc.stdout.readline()


def request_body(arrays, binary=True):
    """Inputs (name -> NumPy array) -> (body bytes, headers) of one infer request; binary: the
    binary-data extension for inputs and outputs (JSON text of an image batch would cost the
    client and the server more than the model)."""
    tensors, chunks = [], []
    for name, arr in arrays.items():
        datatype = {"float32": "FP32", "float16": "FP16", "int64": "INT64",
                    "int32": "INT32"}[arr.dtype.name]
        tensor = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if binary:
            raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = arr.ravel().tolist()
        tensors.append(tensor)
    request = {"inputs": tensors}
    if binary:
        request["parameters"] = {"binary_data_output": True}
    head = json.dumps(request).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    return head + b"".join(chunks), headers


def model_inputs(path, rows):
    """The inputs `cupyprune bench` builds from the file's input spec, for `rows` rows."""
    from cupyprune.format import read_model_file
    from cupyprune.inputs import sample_inputs
    return sample_inputs(read_model_file(path).input_spec, rows)


async def _client_process_main(url, path, body, headers, connections, requests, warmup,
                               barrier):
    """One client process: `connections` connections, each first sends `warmup` unrecorded
    requests (connecting); then, once every process is ready, `requests` in all. On aiohttp
    where installed (its client costs a third of httpx's CPU time per request, and the client
    processes share the machine with the server), else httpx."""
    latencies, codes = [], []
    async with _http_client(url, connections) as post:
        async def worker(todo, record):
            for _ in todo:
                sent = time.monotonic()
                try:
                    code = await post(path, body, headers)
                except Exception as e:            # a dropped connection counts as a failure
                    code = type(e).__name__
                if record:
                    latencies.append(time.monotonic() - sent)
                    codes.append(code)
        await asyncio.gather(*(worker(range(warmup), False) for _ in range(connections)))
        barrier.wait()                              # every process warmed up: start together
        first = time.monotonic()
        todo = iter(range(requests))
        await asyncio.gather(*(worker(todo, True) for _ in range(connections)))
        last = time.monotonic()
    return latencies, codes, first, last


def client_library():
    """The HTTP client the load uses: 'aiohttp' where installed, else 'httpx'."""
    try:
        import aiohttp  # noqa: F401
        return "aiohttp"
    except ImportError:
        return "httpx"


@contextlib.asynccontextmanager
async def _http_client(url, connections):
    """-> post(path, body, headers) -> status code, over at most `connections` kept-alive
    connections; the response body is read whole."""
    if client_library() == "aiohttp":
        import aiohttp
        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=120.0)
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
            async def post(path, body, headers):
                async with client.post(path, data=body, headers=headers) as r:
                    await r.read()
                    return r.status
            yield post
        return
    import httpx
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        async def post(path, body, headers):
            return (await client.post(path, content=body, headers=headers)).status_code
        yield post


def _client_process(args):
    return asyncio.run(_client_process_main(*args))


def run_load(url, model, body, headers, concurrency, requests, processes=4, warmup=2):
    """`requests` infer requests from `concurrency` connections (over at most `processes`
    client processes) -> {"seconds", "latencies" (s, answered 200), "refused" (s, answered
    503), "codes" (count by code)}."""
    procs = max(1, min(processes, concurrency))
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    counts = [requests * s // concurrency for s in shares]
    counts[0] += requests - sum(counts)
    path = f"/v2/models/{model}/infer"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(procs) as pool:
        barrier = manager.Barrier(procs)
        jobs = [(url, path, body, headers, s, n, warmup, barrier) for s, n in zip(shares, counts)]
        results = pool.map(_client_process, jobs)
    latencies, refused, codes = [], [], {}
    for lat, code_list, _, _ in results:
        for seconds, code in zip(lat, code_list):
            codes[str(code)] = codes.get(str(code), 0) + 1
            if code == 200:
                latencies.append(seconds)
            elif code == 503:
                refused.append(seconds)
    seconds = max(r[3] for r in results) - min(r[2] for r in results)
    return {"seconds": seconds, "latencies": latencies, "refused": refused, "codes": codes}
