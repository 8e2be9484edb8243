"""Prometheus metrics of one app instance, in its own registry.

A registry per app (not prometheus_client's global one) lets tests build many apps in one
process without "Duplicated timeseries" errors, and keeps /metrics to this app's series.

Endpoint labels are route templates (``/v1/identify``), or ``other`` for unknown paths, so
a client probing random URLs cannot grow the number of series without bound.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512)


class ServeMetrics:
    """Request counts and latencies, batch sizes, queue depth and rejections."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("rxvision_http_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("rxvision_http_request_duration_seconds",
                                 "Time from request start to response end",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("rxvision_batch_size", "Images per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_jobs = Histogram("rxvision_batch_requests",
                                    "Requests (jobs) grouped into one forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.forward_seconds = Histogram("rxvision_forward_duration_seconds",
                                         "Time of one batched forward pass",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("rxvision_queue_wait_seconds",
                                    "Time a request waited for its forward pass to start",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("rxvision_queue_depth", "Requests waiting for the model",
                                 registry=r)
        self.rejected = Counter("rxvision_queue_rejections",
                                "Requests refused with 503 because the queue was full",
                                registry=r)
        self.model_info = Gauge("rxvision_model_info", "The loaded model (value is always 1)",
                                ["model", "backend"], registry=r)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
