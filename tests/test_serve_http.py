"""`cupyprune serve`'s app on a real uvicorn server (loopback, ephemeral port): the Open
Inference Protocol endpoints, answers equal to `cupyprune.load(...)(x)` on the same input under
concurrent load, overload answered 503 at once, metrics, and every bad request a one-line 400
that leaves the server serving."""
import asyncio
import json
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
import cupyprune  # noqa: E402
from serve_helpers import (DIGITS, digits_config, images, json_body, logits_of,  # noqa: E402
                           serving)

INFER = "/v2/models/digits/infer"
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def reference():
    return cupyprune.load(DIGITS, device="cpu")


@pytest.fixture(scope="module")
def server():
    with serving(digits_config(max_batch=16, max_delay_ms=2.0, max_queue=64)) as (url, app):
        yield url, app


def assert_close(out, ref):
    """Batched rows against the unbatched call: the same arithmetic per row, up to the BLAS
    kernel a batch size picks."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_health_and_metadata(server, reference):
    url, _ = server
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
        meta = client.get("/v2/models/digits").json()
        assert client.get("/v2/models/digits/versions/1").json() == meta
        assert client.get("/v2/models/digits/ready").status_code == 200
        missing = client.get("/v2/models/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
    spec = reference.file.input_spec[0]
    assert meta["name"] == "digits"
    assert meta["inputs"] == [{"name": spec["name"], "datatype": "FP32",
                               "shape": [-1, *spec["shape"][1:]]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32",
                                "shape": [-1, len(reference.labels)]}]


def test_infer_json_and_binary(server, reference, rng):
    url, _ = server
    x = images(rng, 3)
    ref = reference(x)
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        r = client.post(INFER, content=json_body(x))
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert_close(logits_of(r), ref)
        head = json.dumps({"id": "b1", "inputs": [
            {"name": "image", "shape": list(x.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
        r = client.post("/v2/models/digits/versions/1/infer", content=head + x.tobytes(),
                        headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:length])
    assert meta["id"] == "b1" and meta["outputs"][0]["shape"] == [3, 10]
    assert_close(np.frombuffer(r.content[length:], "<f4").reshape(3, 10), ref)


@pytest.mark.slow
def test_concurrent_clients_get_their_own_answers(server, reference):
    """32 clients x 20 requests of 1-4 random images each: every answer equals the model's own
    call on that input, none lost, and requests were batched together."""
    url, app = server
    metrics = app.state.server.metrics
    before = metrics.batch_size.labels("digits")._sum.get()
    rng = np.random.default_rng()
    inputs = [[images(rng, int(rng.integers(1, 5))) for _ in range(20)] for _ in range(32)]

    async def client_run(client, xs):
        outs = []
        for x in xs:
            r = await client.post(INFER, content=json_body(x))
            assert r.status_code == 200, r.text
            outs.append(logits_of(r))
        return outs

    async def main():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
            return await asyncio.wait_for(asyncio.gather(
                *(client_run(client, xs) for xs in inputs)), 300)

    results = asyncio.run(main())
    answered = 0
    for xs, outs in zip(inputs, results):
        assert len(outs) == len(xs)
        for x, out in zip(xs, outs):
            assert_close(out, reference(x))
            answered += 1
    assert answered == 32 * 20
    rows = sum(len(x) for xs in inputs for x in xs)
    assert metrics.batch_size.labels("digits")._sum.get() - before == rows


class Gate:
    """Wraps a served model's run: the first call waits until `open()`."""

    def __init__(self, served):
        self.run = served.run
        self.rows = []
        self.entered, self.opened = threading.Event(), threading.Event()
        served.run = self

    def __call__(self, inputs):
        self.rows.append(len(inputs["image"]))
        self.entered.set()
        assert self.opened.wait(TIMEOUT_S)
        return self.run(inputs)

    def open(self):
        self.opened.set()


def test_overload_answers_503_at_once_and_the_rest_correctly(reference):
    """Twice the capacity (one batch in the model + the queue) at once, while the model is held:
    the excess is answered 503 with Retry-After before the model moves, the rest correctly."""
    queue, max_batch = 16, 4
    config = digits_config(max_batch=max_batch, max_delay_ms=0.0, max_queue=queue)
    gates = []
    with serving(config, patch=lambda served: gates.append(Gate(served["digits"]))) \
            as (url, app):
        gate, batcher = gates[0], app.state.server.batchers["digits"]
        rng = np.random.default_rng()
        xs = [images(rng, 1) for _ in range(2 * (queue + max_batch))]
        answers, seconds = [None] * len(xs), [None] * len(xs)

        async def one(client, i):
            start = time.perf_counter()
            answers[i] = await client.post(INFER, content=json_body(xs[i]))
            seconds[i] = time.perf_counter() - start

        async def main():
            limits = httpx.Limits(max_connections=len(xs))
            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as c:
                tasks = [asyncio.create_task(one(c, i)) for i in range(len(xs))]
                # every request answered, queued or in the held batch; the batch may be taken
                # from a full queue after some were refused, so the queue may hold fewer than
                # max_queue then
                deadline = time.monotonic() + TIMEOUT_S
                while not (gate.entered.is_set() and sum(a is not None for a in answers)
                           + batcher.depth() + gate.rows[0] == len(xs)):
                    assert time.monotonic() < deadline, (
                        f"requests unaccounted for: {sum(a is not None for a in answers)} "
                        f"answered, {batcher.depth()} queued, {gate.rows} in the model")
                    await asyncio.sleep(0.01)
                refused, queued = [a for a in answers if a is not None], batcher.depth()
                gate.open()
                await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
                return refused, queued

        refused, queued = asyncio.run(main())
        latency = app.state.server.metrics.latency.labels("digits", "503")
    assert queued <= queue and gate.rows[0] <= max_batch
    assert len(refused) >= len(xs) - queue - max_batch          # at least the excess refused
    assert all(r.status_code == 503 for r in refused)
    assert all(r.headers["retry-after"] == "1" and "queued" in r.json()["error"]
               for r in refused)
    # answered before the model moved (above), and by the server within 50 ms: the histogram's
    # 0.05 s bucket holds at least half of them (the median; on a loaded 2-core machine the
    # slowest wait for the event loop to parse the other requests of the burst)
    within = {b.labels["le"]: b.value for b in latency.collect()[0].samples
              if b.name.endswith("_bucket")}
    print(f"503s answered by the server within 50 ms: {within['0.05']:.0f} of {len(refused)}")
    assert 2 * within["0.05"] >= len(refused)
    client_ms = sorted(1e3 * s for a, s in zip(answers, seconds) if a.status_code == 503)
    print(f"503s: {len(refused)}, client-side latency median {client_ms[len(client_ms) // 2]:.1f}"
          f" ms, max {client_ms[-1]:.1f} ms")
    accepted = [(x, a) for x, a in zip(xs, answers) if a.status_code != 503]
    assert len(accepted) == queued + gate.rows[0] and len(refused) + len(accepted) == len(xs)
    for x, a in accepted:
        assert a.status_code == 200
        assert_close(logits_of(a), reference(x))


def _metric(text, name, **labels):
    """A sample's value from the Prometheus text format (0 where absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0].endswith(want) or \
                line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics(rng):
    with serving(digits_config(max_batch=8)) as (url, _):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            rows = [2, 3, 1]
            for n in rows:
                assert client.post(INFER, content=json_body(images(rng, n))).status_code == 200
            assert client.post(INFER, content=b"{").status_code == 400
            text = client.get("/metrics").text
    assert _metric(text, "cupyprune_requests_total", code="200", model="digits") == 3
    assert _metric(text, "cupyprune_requests_total", code="400", model="digits") == 1
    assert _metric(text, "cupyprune_request_latency_seconds_count", code="200",
                   model="digits") == 3
    assert _metric(text, "cupyprune_batch_size_sum", model="digits") == sum(rows)
    assert _metric(text, "cupyprune_batch_size_count", model="digits") == len(rows)
    assert "cupyprune_queue_depth{model=\"digits\"} 0.0" in text


def _image_tensor(**fields):
    x = np.ones((1, 1, 8, 8), np.float32)
    base = {"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
            "data": x.ravel().tolist()}
    base.update(fields)
    return json.dumps({"inputs": [base]}).encode()


BAD_REQUESTS = [
    (b"", "not valid JSON"),
    (b"{\"inputs\": [", "not valid JSON"),
    (_image_tensor(shape=[1, 1, 8, 7], data=[0.0] * 56), "expected (N, 1, 8, 8)"),
    (_image_tensor(shape=[1, 64], data=[0.0] * 64), "has shape (1, 64)"),
    (_image_tensor(datatype="INT64", data=[1] * 64), "must be floating point"),
    (_image_tensor(datatype="FP32", data=[1] * 63), "holds 63 values"),
    (_image_tensor(name="pixels"), "unknown input 'pixels'"),
    (_image_tensor(shape=[0, 1, 8, 8], data=[]), "is empty"),
    (_image_tensor(shape=[33, 1, 8, 8], data=[0.5] * (33 * 64)), "larger than the server's "
                                                                 "batch limit"),
    (b'{"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ['
     + b"NaN, " * 63 + b"1.0]}]}", "NaN or Inf"),
    (_image_tensor(datatype="FP64", data=[1e300] * 64), "NaN or Inf"),
    (json.dumps({"inputs": [], "outputs": []}).encode(), "input 'image' is required"),
    (json.dumps({"inputs": [json.loads(_image_tensor())["inputs"][0]],
                 "outputs": [{"name": "probs"}]}).encode(), "unknown output 'probs'"),
]


@pytest.mark.parametrize("body, message", BAD_REQUESTS)
def test_bad_requests_answer_400_in_one_line(server, body, message, reference, rng):
    url, _ = server
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        r = client.post(INFER, content=body)
        assert r.status_code == 400
        assert "\n" not in r.text and list(r.json()) == ["error"]
        assert message in r.json()["error"]
        x = images(rng, 1)                                   # the server still serves
        assert_close(logits_of(client.post(INFER, content=json_body(x))), reference(x))


def test_body_limit_and_encoding(rng):
    x = images(rng, 4)
    body = json_body(x)
    with serving(digits_config(max_body_bytes=len(body) - 1)) as (url, _):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            r = client.post(INFER, content=body)
            assert r.status_code == 400 and "over the server's limit" in r.json()["error"]

            def chunks():                                    # no Content-Length: streamed
                yield body[:100]
                yield body[100:]
            r = client.post(INFER, content=chunks())
            assert r.status_code == 400 and "over the server's limit" in r.json()["error"]
            r = client.post(INFER, content=json_body(x[:1]),
                            headers={"content-encoding": "gzip"})
            assert r.status_code == 400 and "gzip is not supported" in r.json()["error"]
            assert client.post(INFER, content=json_body(x[:1])).status_code == 200


def test_internal_error_answers_500_and_serving_goes_on(reference, rng):
    def break_first_call(served):
        run, calls = served["digits"].run, []

        def flaky(inputs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("out of device memory")
            return run(inputs)
        served["digits"].run = flaky

    with serving(digits_config(), patch=break_first_call) as (url, _):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            x = images(rng, 2)
            r = client.post(INFER, content=json_body(x))
            assert r.status_code == 500
            assert r.json() == {"error": "internal error: RuntimeError: out of device memory"}
            assert_close(logits_of(client.post(INFER, content=json_body(x))), reference(x))
            assert client.get("/v2/health/ready").status_code == 200


def test_two_models_served_side_by_side(reference, rng):
    config = digits_config()
    config.models = {"a": DIGITS, "b": DIGITS}
    with serving(config) as (url, _):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            x = images(rng, 2)
            for name in ("a", "b"):
                r = client.post(f"/v2/models/{name}/infer", content=json_body(x))
                assert r.json()["model_name"] == name
                assert_close(logits_of(r), reference(x))


def test_tritonclient_works_unchanged(server, reference, rng):
    """Triton's own HTTP client (binary tensors by default, JSON on request) against the app."""
    httpclient = pytest.importorskip("tritonclient.http")
    url, _ = server
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready("digits")
        assert client.get_model_metadata("digits")["inputs"][0]["shape"] == [-1, 1, 8, 8]
        x = images(rng, 3)
        for binary in (True, False):
            tensor = httpclient.InferInput("image", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            wanted = httpclient.InferRequestedOutput("logits", binary_data=binary)
            result = client.infer("digits", [tensor], outputs=[wanted])
            assert_close(result.as_numpy("logits"), reference(x))
        bad = httpclient.InferInput("image", [1, 1, 8, 7], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 1, 8, 7), np.float32))
        with pytest.raises(Exception, match=r"\[400\].*expected \(N, 1, 8, 8\)"):
            client.infer("digits", [bad])
    finally:
        client.close()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_serving_pads_to_buckets_and_answers_like_the_model(precision):
    """On the GPU: graph replay per bucket (warmed up at start), pinned staging, concurrent
    requests batched; every answer equals the model's own call on its input (per-precision
    tolerance: a batch of another size may take other GEMM kernels)."""
    from cupyprune.backend import to_numpy
    from cupyprune.serve import ServeConfig
    config = ServeConfig(models={"digits": DIGITS}, device="gpu", precision=precision,
                         max_batch=8, max_delay_ms=5.0)
    reference = cupyprune.load(DIGITS, device="gpu", precision=precision)
    rng = np.random.default_rng()
    inputs = [[images(rng, int(rng.integers(1, 4))) for _ in range(10)] for _ in range(8)]
    with serving(config) as (url, app):
        served = app.state.server.models["digits"]
        assert served.pad_to_buckets
        assert len(served.model.graph_runner.captured) == 4        # buckets 1, 2, 4, 8

        async def client_run(client, xs):
            return [await client.post(INFER, content=json_body(x)) for x in xs]

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
                return await asyncio.gather(*(client_run(client, xs) for xs in inputs))

        answers = asyncio.run(main())
        assert len(served.model.graph_runner.captured) == 4        # no capture per size
    tol = 1e-5 if precision == "fp32" else 1e-2
    for xs, rs in zip(inputs, answers):
        for x, r in zip(xs, rs):
            assert r.status_code == 200, r.text
            out = r.json()["outputs"][0]
            got = np.asarray(out["data"], np.float32).reshape(out["shape"])
            ref = to_numpy(reference(x)).astype(np.float32)
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_long_json_is_parsed_off_the_event_loop(monkeypatch, reference, rng):
    """A request whose JSON text is long (here 256 images) is decoded in a worker thread, so the
    event loop goes on answering others; a short one on the loop; both answered right."""
    from cupyprune.serve import app as app_module
    threads = []
    decode = app_module._decode_and_check

    def recording(*args):
        threads.append(threading.get_ident())
        return decode(*args)
    monkeypatch.setattr(app_module, "_decode_and_check", recording)
    with serving(digits_config(max_batch=256)) as (url, _):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            for rows in (1, 256):
                x = images(rng, rows)
                body = json_body(x)
                assert (len(body) > app_module.OFFLOAD_JSON_BYTES) == (rows == 256)
                assert_close(logits_of(client.post(INFER, content=body)), reference(x))
    assert len(threads) == 2 and threads[0] != threads[1]
