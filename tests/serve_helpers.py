"""A real uvicorn server on 127.0.0.1 and an ephemeral port, in a thread of the test process,
for the serve tests; and OIP request bodies built by hand (the protocol's own text, not the
code under test)."""
import contextlib
import json
import os
import threading
import time

import numpy as np

from cupyprune.serve import ServeConfig, build_app, load_models
from cupyprune.serve.server import bind, make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "weights", "digits_group50.safetensors")
STARTUP_S = 60


def digits_config(**options):
    return ServeConfig(models={"digits": DIGITS}, device="cpu", **options)


@contextlib.contextmanager
def running(app):
    """Serve `app` on a free loopback port in a thread -> its base URL; stopped (gracefully,
    bounded) on exit."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, graceful_s=10)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


@contextlib.contextmanager
def serving(config=None, patch=None):
    """Load the config's models (the digits model by default), apply patch(served) (to wrap a
    model's run), build the app and serve it -> (URL, app)."""
    config = config or digits_config()
    served = load_models(config)
    if patch is not None:
        patch(served)
    app = build_app(served, config)
    with running(app) as url:
        yield url, app


def json_body(x, name="image", datatype="FP32"):
    return json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                                   "data": x.ravel().tolist()}]}).encode()


def logits_of(response):
    """A JSON infer response -> its first output as a float32 array."""
    out = response.json()["outputs"][0]
    assert out["datatype"] == "FP32"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def images(rng, rows):
    return rng.standard_normal((rows, 1, 8, 8)).astype(np.float32)
