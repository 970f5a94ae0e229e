"""The ASGI app (Starlette): the Open Inference Protocol v2 endpoints, /metrics, and the
batchers' lifetime (started with the app, drained when it shuts down).

Answers: 200; 400 `{"error": "..."}` (one line) for a malformed body, a wrong input, a body over
the limit; 404 for an unknown model; 503 with Retry-After when the model's queue is full or the
server is stopping; 500 for an internal error, after which the server keeps serving.
"""
import asyncio
import contextlib
import logging
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import InputError
from .batcher import DynamicBatcher, Overloaded, Stopped
from .metrics import ServeMetrics
from .protocol import HEADER_LENGTH, ProtocolError, decode_request, encode_response

log = logging.getLogger(__name__)
RETRY_AFTER_S = "1"
OFFLOAD_JSON_BYTES = 64 << 10    # JSON text longer than this is parsed off the event loop
SERVED_VERSION = "1"         # one version per model


def error_response(code, message, headers=None):
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=code,
                        headers=headers)


class ServerState:
    """The served models, their batchers and the metrics of one app."""

    def __init__(self, served, config):
        self.models, self.config = served, config
        self.metrics = ServeMetrics(config.max_batch)
        self.batchers = {
            name: DynamicBatcher(name, m.run, config.max_batch, config.max_delay_ms / 1000.0,
                                 config.max_queue, m.pad_to_buckets, self.metrics,
                                 m.staging)
            for name, m in served.items()}
        self.ready = False

    def start(self):
        for batcher in self.batchers.values():
            batcher.start()
        self.ready = True

    def stop(self):
        """Refuse new requests, answer the queued ones, end the worker threads."""
        self.ready = False
        for batcher in self.batchers.values():
            batcher.stop()


async def _read_body(request, limit):
    """The body, refused (400) once it is longer than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"the body of {declared} bytes is over the server's limit of "
                            f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body is over the server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_bytes(body, header_length):
    """The length of a body's JSON part (binary tensors after it cost little to decode)."""
    if header_length is not None and header_length.isdigit():
        return min(int(header_length), len(body))
    return len(body)


def _decode_and_check(served, body, header_length):
    """-> (InferRequest, checked inputs, rows): everything refused before the batch."""
    request = decode_request(body, header_length)
    names = [o["name"] for o in served.outputs]
    for name in request.outputs or ():
        if name not in names:
            raise ProtocolError(f"unknown output {name!r}: the model's outputs are "
                                f"{', '.join(names)}")
    inputs, rows = served.check(request.inputs)
    return request, inputs, rows


def build_app(served, config):
    """served: {name: ServedModel}; config: ServeConfig -> the Starlette app (its ServerState
    in app.state.server)."""
    state = ServerState(served, config)

    def model_or_none(request):
        name = request.path_params["name"]
        version = request.path_params.get("version", SERVED_VERSION)
        return state.models.get(name) if version == SERVED_VERSION else None

    async def server_metadata(request):
        return JSONResponse({"name": "cupyprune", "version": __version__,
                             "extensions": ["binary_tensor_data"]})

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)

    async def model_metadata(request):
        served_model = model_or_none(request)
        if served_model is None:
            return error_response(404, f"unknown model {request.path_params['name']!r}")
        return JSONResponse(served_model.metadata())

    async def model_ready(request):
        if model_or_none(request) is None:
            return error_response(404, f"unknown model {request.path_params['name']!r}")
        return JSONResponse({"name": request.path_params["name"], "ready": state.ready},
                            status_code=200 if state.ready else 503)

    async def infer(request):
        start = time.perf_counter()
        served_model = model_or_none(request)
        if served_model is None:
            response = error_response(404, f"unknown model {request.path_params['name']!r}")
            state.metrics.answered("", 404, time.perf_counter() - start)
            return response
        in_flight = state.metrics.in_flight.labels(served_model.name)
        in_flight.inc()
        try:
            response = await _infer(served_model, request)
        finally:
            in_flight.dec()
        state.metrics.answered(served_model.name, response.status_code,
                               time.perf_counter() - start)
        return response

    async def _infer(served_model, request):
        try:
            if request.headers.get("content-encoding", "identity") != "identity":
                raise ProtocolError(f"Content-Encoding {request.headers['content-encoding']} is "
                                    f"not supported: send the body uncompressed")
            body = await _read_body(request, config.max_body_bytes)
            header_length = request.headers.get(HEADER_LENGTH)
            args = (served_model, body, header_length)
            if _json_bytes(body, header_length) > OFFLOAD_JSON_BYTES:
                checked = await asyncio.get_running_loop().run_in_executor(
                    None, _decode_and_check, *args)
            else:
                checked = _decode_and_check(*args)
            infer_request, inputs, rows = checked
            future = state.batchers[served_model.name].submit(inputs, rows)
            outputs = await asyncio.wrap_future(future)
            if infer_request.outputs is not None:
                outputs = {k: outputs[k] for k in infer_request.outputs}
            content, headers = encode_response(served_model.name, infer_request, outputs)
            return Response(content, headers=headers)
        except InputError as e:
            return error_response(400, e)
        except Overloaded as e:
            return error_response(503, e, headers={"Retry-After": RETRY_AFTER_S})
        except Stopped as e:
            return error_response(503, e)
        except Exception as e:
            log.exception("model %r: internal error", served_model.name)
            return error_response(500, f"internal error: {type(e).__name__}: {e}")

    async def metrics(request):
        for name, batcher in state.batchers.items():
            state.metrics.queue_depth.labels(name).set(batcher.depth())
        content, content_type = state.metrics.exposition()
        return Response(content, headers={"content-type": content_type})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.start()
        try:
            yield
        finally:          # uvicorn has answered its in-flight requests; drain what is queued
            await asyncio.get_running_loop().run_in_executor(None, state.stop)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [Route("/v2", server_metadata), Route("/v2/health/live", live),
              Route("/v2/health/ready", ready), Route("/metrics", metrics)]
    for prefix in (model, versioned):
        routes += [Route(prefix, model_metadata), Route(prefix + "/ready", model_ready),
                   Route(prefix + "/infer", infer, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = state
    return app
