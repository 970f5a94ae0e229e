"""The same app scaled out on Ray Serve: each replica loads the model files, runs its own
batchers and serves the app's routes; Ray's proxy spreads requests over the replicas.

Replicas take one GPU each (`num_gpus=1`) when the device is the GPU, or when it is 'auto' and
the cluster has GPUs; CPU replicas otherwise. `autoscaling_config` (Ray Serve's own dict:
min_replicas, max_replicas, target_ongoing_requests, ...) is passed through and replaces the
fixed replica count.

On a multi-node cluster: `ray start --head` on one node, `ray start --address=HEAD:6379` on
the others, the model files at the same path on every node, then on the head
`RAY_ADDRESS=auto cupyprune serve --ray --replicas 8 --host 0.0.0.0 model.safetensors`
(or `run_on_ray(config, ...)` from Python).
"""
from ray import serve

from ..backend import DEVICE_ENV
from .app import build_app
from .served_model import load_models

APP_NAME = "cupyprune"


@serve.ingress()
class CupypruneReplica:
    """One replica: its own models and batchers, the app built after them."""

    def __init__(self, config):
        self._config = config
        self._served = load_models(config)

    def __serve_build_asgi_app__(self):
        return build_app(self._served, self._config)


def _wants_gpu(config):
    import os

    import ray
    device = (config.device or os.environ.get(DEVICE_ENV) or "auto").lower()
    if device == "auto":
        return ray.cluster_resources().get("GPU", 0) >= 1
    return device == "gpu"


def deployment(config, replicas=1, autoscaling_config=None, ray_actor_options=None):
    """A bound Ray Serve application of the app for `config` (a ServeConfig)."""
    options = dict(ray_actor_options or {})
    options.setdefault("num_gpus", 1 if _wants_gpu(config) else 0)
    scaling = {"autoscaling_config": autoscaling_config} if autoscaling_config else \
        {"num_replicas": replicas}
    # every replica's queue is bounded by the app; Ray's own limit keeps it from piling up more
    limit = config.max_queue + config.max_batch
    return serve.deployment(CupypruneReplica, name=APP_NAME, ray_actor_options=options,
                            max_ongoing_requests=limit, **scaling).bind(config)


def run_on_ray(config, host="127.0.0.1", port=8000, replicas=1, autoscaling_config=None,
               ray_actor_options=None, blocking=False):
    """Start Ray Serve's HTTP proxy on host:port (connecting to $RAY_ADDRESS's cluster, or a
    local Ray) and deploy the app -> its URL."""
    import ray
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(config, replicas, autoscaling_config, ray_actor_options),
              name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{host}:{port}"
