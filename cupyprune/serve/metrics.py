"""Prometheus metrics of the server (prometheus-client), in a registry of its own so that
several apps in one process (tests, Ray replicas) do not collide. Under `--workers N`
(PROMETHEUS_MULTIPROC_DIR set before prometheus-client is imported) every worker writes its
values to files there and /metrics reports their sums; gauges sum over the live workers."""
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .buckets import bucket_sizes

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"   # prometheus-client's multiprocess directory
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)


class ServeMetrics:
    def __init__(self, max_batch):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cupyprune_requests", "Inference requests answered, by model and HTTP status code "
            "(200 answered; 400 bad request; 404 unknown model; 500 internal error; 503 queue "
            "full or shutting down)", ["model", "code"], registry=self.registry)
        self.latency = Histogram(
            "cupyprune_request_latency_seconds", "Time from a request's arrival to its answer, "
            "by model and code", ["model", "code"], buckets=LATENCY_BUCKETS_S,
            registry=self.registry)
        self.batch_size = Histogram(
            "cupyprune_batch_size", "Rows of requests per model call (before padding to a "
            "bucket)", ["model"], buckets=bucket_sizes(max_batch), registry=self.registry)
        self.in_flight = Gauge(
            "cupyprune_requests_in_flight", "Inference requests received and not yet answered",
            ["model"], registry=self.registry, multiprocess_mode="livesum")
        self.queue_depth = Gauge(
            "cupyprune_queue_depth", "Requests waiting for a model call", ["model"],
            registry=self.registry, multiprocess_mode="livesum")
        self._exposed = self.registry
        if os.environ.get(METRICS_DIR_ENV):       # /metrics: the sums over every worker's files
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)

    def answered(self, model, code, seconds):
        self.requests.labels(model, str(code)).inc()
        self.latency.labels(model, str(code)).observe(seconds)

    def exposition(self):
        """-> (body bytes, content type) of GET /metrics."""
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST
