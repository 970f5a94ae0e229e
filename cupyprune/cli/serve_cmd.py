"""`cupyprune serve`: model files behind an Open Inference Protocol v2 server with dynamic
batching (cupyprune.serve), on uvicorn or scaled out on Ray Serve."""
import json
import threading
import warnings

import click

from ..atomic import Terminated, terminate_by_exception
from ..errors import InputError
from .common import device_option, graph_option, one_line_errors, path_option, precision_option


def _import_serving(ray):
    """The serve extras, or an InputError that says which extra to install."""
    try:
        from .. import serve          # noqa: F401  (starlette, uvicorn, prometheus-client)
        if ray:
            with warnings.catch_warnings():   # Ray's imports warn of their own deprecations
                warnings.simplefilter("ignore")
                import ray as _       # noqa: F401
                from ray import serve as _serve    # noqa: F401
    except ImportError as e:
        missing = (e.name or "a module").split(".")[0]
        extra = "ray" if missing == "ray" else "serve"
        raise InputError(f"serving needs the '{extra}' extra: pip install "
                         f"'cupyprune[{extra}]' ({missing} is missing)") from None


def _autoscaling(text):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InputError(f"--autoscaling: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise InputError("--autoscaling: expected a JSON object such as "
                         "'{\"min_replicas\": 1, \"max_replicas\": 4}'")
    return value


@click.command("serve")
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@device_option
@path_option
@precision_option
@graph_option
@click.option("--max-batch", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Rows per model call; concurrent requests are batched up to this, and a "
                   "larger request is refused.")
@click.option("--max-delay-ms", type=click.FloatRange(0, 10_000), default=2.0,
              show_default=True, help="How long a request waits for others to batch with.")
@click.option("--max-queue", type=click.IntRange(1), default=256, show_default=True,
              help="Requests waiting per model; beyond this the answer is 503 with Retry-After.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0,
              show_default=True, help="Largest request body (MiB); a larger one is refused "
                                      "with 400.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Server processes sharing the port, each with its own copy of the models "
                   "and its own batchers (one process answers a few thousand requests a "
                   "second).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run as a Ray Serve deployment (on $RAY_ADDRESS's cluster, else a local "
                   "Ray).")
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True,
              help="Ray Serve replicas (one GPU each on a GPU cluster).")
@click.option("--autoscaling", "autoscaling_json", default=None,
              help="Ray Serve autoscaling_config as JSON, passed through (replaces --replicas).")
@click.option("--replica-gpus", type=click.FloatRange(0, 1), default=None,
              help="GPUs per Ray replica (default 1 on a GPU cluster; 0.25: four share one).")
@one_line_errors
def serve_cmd(models, host, port, device, path_choice, precision, cuda_graph, max_batch,
              max_delay_ms, max_queue, max_body_mb, workers, use_ray, replicas, autoscaling_json,
              replica_gpus):
    """Serve MODEL files (PATH or NAME=PATH; the name defaults to the file's stem) over the
    Open Inference Protocol v2 (KServe, Triton clients): GET /v2/health/ready,
    GET /v2/models/NAME, POST /v2/models/NAME/infer, GET /metrics."""
    if not use_ray:
        given = [name for name, value in (("--replicas", replicas != 1),
                                          ("--autoscaling", autoscaling_json is not None),
                                          ("--replica-gpus", replica_gpus is not None)) if value]
        if given:
            raise InputError(f"{given[0]} applies to Ray Serve: add --ray")
    elif workers != 1:
        raise InputError("--workers applies to the uvicorn server: with --ray, give --replicas")
    _import_serving(use_ray)
    from ..serve.config import ServeConfig, parse_models
    config = ServeConfig(models=parse_models(models), device=device, precision=precision,
                         path_choice=path_choice,
                         cuda_graph="auto" if cuda_graph is None else cuda_graph,
                         max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
                         max_body_bytes=int(max_body_mb * (1 << 20)))
    if use_ray:
        actor = {} if replica_gpus is None else {"num_gpus": replica_gpus}
        _serve_on_ray(config, host, port, replicas, _autoscaling(autoscaling_json), actor)
    elif workers > 1:
        _serve_workers(config, host, port, workers)
    else:
        _serve_here(config, host, port)


def _stopped(what):
    click.echo(f"stopped ({what}): every request in flight was answered")


def _announce(sock, config, device, workers=None):
    """The server's first stdout line: what it serves, where (the bound port) and its limits."""
    host, port = sock.getsockname()[:2]
    processes = f"{workers} workers, " if workers else ""
    each = " each" if workers else ""
    click.echo(f"serving {', '.join(config.models)} ({device}, {config.precision}) on "
               f"http://{host}:{port} ({processes}max batch {config.max_batch}, delay "
               f"{config.max_delay_ms:g} ms, queue {config.max_queue}{each})")


def _serve_here(config, host, port):
    from ..serve.app import build_app
    from ..serve.served_model import load_models
    from ..serve.server import bind, serve_forever
    served = load_models(config)            # errors in the files: before the port is taken
    sock = bind(host, port)
    _announce(sock, config, next(iter(served.values())).model.device)
    try:
        serve_forever(build_app(served, config), sock)
    except Terminated:
        _stopped("SIGTERM")
    except KeyboardInterrupt:
        _stopped("interrupted")


def _serve_workers(config, host, port, workers):
    from ..format import read_model_file
    from ..serve.server import bind
    from ..serve.workers import serve_workers
    for path in config.models.values():     # a defective file: one error before any worker
        read_model_file(path)
    sock = bind(host, port)
    _announce(sock, config, config.device or "auto", workers)
    serve_workers(config, sock, workers)
    _stopped("SIGTERM or interrupt")


def _serve_on_ray(config, host, port, replicas, autoscaling, actor_options):
    import ray
    from ray import serve

    from ..serve.ray import run_on_ray
    try:
        url = run_on_ray(config, host=host, port=port, replicas=replicas,
                         autoscaling_config=autoscaling, ray_actor_options=actor_options,
                         blocking=False)
        terminate_by_exception()        # ray.init installed its own SIGTERM handler
        click.echo(f"serving {', '.join(config.models)} on Ray Serve at {url} "
                   f"({'autoscaling' if autoscaling else f'{replicas} replicas'})")
        threading.Event().wait()
    except (Terminated, KeyboardInterrupt):
        serve.shutdown()                # replicas finish their requests (Ray's graceful wait)
        ray.shutdown()
        _stopped("Ray Serve shut down")
