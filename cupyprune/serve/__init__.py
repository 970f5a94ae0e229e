"""`cupyprune serve`: model files behind the Open Inference Protocol v2 (the HTTP/JSON protocol
of KServe and Triton, with its binary-data extension), with dynamic batching and Prometheus
metrics, on uvicorn or Ray Serve. Needs the `serve` extra (the `ray` extra for Ray Serve).

    from cupyprune.serve import ServeConfig, build_app, load_models
    config = ServeConfig(models={"digits": "weights/digits_group50.safetensors"})
    app = build_app(load_models(config), config)        # an ASGI app: uvicorn.run(app)

Modules: protocol (the wire format), served_model (checks and metadata of one model), batcher
(the bounded queue and worker thread per model), buckets (padded batch sizes), metrics, app
(the routes), server (uvicorn), ray (the Ray Serve deployment).
"""
from .app import build_app
from .config import ServeConfig, parse_models
from .served_model import load_models

__all__ = ["ServeConfig", "build_app", "load_models", "parse_models"]
