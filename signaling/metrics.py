"""Prometheus instruments of one signaling application, in its own registry.

Each application owns a :class:`~prometheus_client.CollectorRegistry`, so two
apps in one process (tests, the all-in-one server) never share counters and
nothing is registered globally at import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class ApiMetrics:
    """Request counters and latencies per route, and booking outcomes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "courtlink_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "courtlink_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.bookings = Counter(
            "courtlink_bookings",
            "Booking attempts by outcome: booked, conflict, invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.hearing_changes = Counter(
            "courtlink_hearing_changes",
            "Accepted changes to booked hearings, by action.",
            ["action"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
