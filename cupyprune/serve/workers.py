"""Several server processes on one port (`cupyprune serve --workers N`), under uvicorn's own
process supervisor.

One Python process answers a few thousand requests a second: the HTTP parsing, the decoding
and the checks of each request hold its interpreter lock, however fast the model. N worker
processes share the listening socket (the kernel hands each new connection to one of them);
each loads the model files itself and runs its own batchers, so on a GPU N processes share the
card, each with its own CUDA context and graphs. The parent loads nothing: it passes the
ServeConfig to the workers in the environment, restarts a worker that dies after starting, and
on SIGTERM has every worker drain its requests.

Metrics: prometheus-client's multiprocess mode, one directory of value files shared by the
workers (PROMETHEUS_MULTIPROC_DIR, made and removed here), so /metrics on any worker reports
the sums over all of them.
"""
import dataclasses
import json
import logging
import os
import sys
import tempfile

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from ..errors import CupyPruneError, InputError
from .config import ServeConfig
from .metrics import METRICS_DIR_ENV

CONFIG_ENV = "CUPYPRUNE_SERVE_CONFIG"       # the ServeConfig as JSON, for the workers
FAILURE_ENV = "CUPYPRUNE_SERVE_FAILURE"     # where a worker that cannot start says why


def app_from_environment():
    """uvicorn's app factory, run in each worker: its models loaded, its app built. A worker
    that cannot load them writes the one-line reason for the parent and exits with uvicorn's
    start-up failure code (the supervisor then stops instead of restarting it)."""
    from .app import build_app
    from .served_model import load_models
    config = ServeConfig(**json.loads(os.environ[CONFIG_ENV]))
    try:
        served = load_models(config)
    except Exception as e:      # any: a worker that dies while starting is restarted, forever
        reason = _reason(e)
        with open(os.environ[FAILURE_ENV], "a") as f:
            f.write(" ".join(reason.split()) + "\n")
        sys.exit(STARTUP_FAILURE)
    return build_app(served, config)


class _StartFailureReported(logging.Filter):
    """Drops the supervisor's own line on a worker's start-up failure: the parent raises the
    worker's reason instead, as the one line the user sees."""

    def filter(self, record):
        return "failed to start" not in record.getMessage()


def _reason(error):
    """A worker's start-up failure as the one line the user sees. Each worker checks the memory
    it needs before loading, but the workers load at once, so N copies that do not fit on one
    GPU can still fail in an allocation."""
    if isinstance(error, CupyPruneError):
        return str(error)
    if isinstance(error, MemoryError) or "OutOfMemory" in type(error).__name__:
        return (f"a server worker ran out of memory while loading the models ({error}): "
                f"fewer --workers, or a smaller --max-batch")
    return f"a server worker could not start: {type(error).__name__}: {error}"


def serve_workers(config, sock, workers, log_level="warning", graceful_s=30):
    """Serve `config` from `workers` processes on the bound socket until SIGTERM/SIGINT.
    InputError where a worker could not load the models (its reason)."""
    with tempfile.TemporaryDirectory(prefix="cupyprune-serve-") as tmp:
        metrics_dir = os.path.join(tmp, "metrics")
        os.mkdir(metrics_dir)
        failure = os.path.join(tmp, "failure")
        passed = {CONFIG_ENV: json.dumps(dataclasses.asdict(config)), FAILURE_ENV: failure,
                  METRICS_DIR_ENV: metrics_dir}
        before = {k: os.environ.get(k) for k in passed}
        os.environ.update(passed)                    # the spawned workers inherit these
        try:
            uv = uvicorn.Config("cupyprune.serve.workers:app_from_environment", factory=True,
                                workers=workers, lifespan="on", log_level=log_level,
                                access_log=False, timeout_graceful_shutdown=graceful_s)
            supervisor = Multiprocess(uv, sockets=[sock])
            logging.getLogger("uvicorn.error").addFilter(_StartFailureReported())
            supervisor.run()
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if os.path.exists(failure):
            with open(failure) as f:
                raise InputError(f.readline().strip() or "a server worker could not start")
