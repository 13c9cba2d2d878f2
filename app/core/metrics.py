"""Prometheus metrics (prometheus-client), one registry per app, served at `/metrics`.

- `http_requests_total{method,route,status}` and `http_request_duration_seconds{method,route}`:
  `route` is the route's template (`/sessions/{session_id}`), so ids never become labels.
- `llm_calls_total{provider,model,outcome}` and `llm_call_duration_seconds{provider,model}`: one
  per attempt (`outcome` is `success` or the error code, e.g. `llm_timeout`).
- `llm_tokens_total{provider,model,kind}`: prompt and completion tokens.
- `chat_active_generations`: replies being generated (summed over live worker processes).
- `jobs_finished_total{kind,outcome}`: background job attempts (`done`, `retry`, `dead`).
- `jobs_queued{kind}`, `jobs_running{kind}`, `jobs_dead{kind}` and
  `jobs_oldest_queued_age_seconds{kind}`: the queue as the database holds it.
- `db_round_trips_total{kind}`: statements, BEGINs, COMMITs and ROLLBACKs sent to the database.

With several worker processes (`uvicorn --workers N`), set `PROMETHEUS_MULTIPROC_DIR` to an empty
directory that the workers share (prometheus-client's multiprocess mode): `/metrics` then sums
every worker's numbers instead of showing whichever worker answered.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time to the end of the response (whole stream for SSE).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.llm_calls = Counter(
            "llm_calls_total",
            "LLM call attempts by provider, model and outcome.",
            ["provider", "model", "outcome"],
            registry=self.registry,
        )
        self.llm_seconds = Histogram(
            "llm_call_duration_seconds",
            "LLM call attempts' duration (streams: until the first text).",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "llm_tokens_total",
            "Tokens reported by the LLM.",
            ["provider", "model", "kind"],
            registry=self.registry,
        )
        self.active_generations = Gauge(
            "chat_active_generations",
            "Replies being generated.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.jobs_finished = Counter(
            "jobs_finished_total",
            "Background job attempts by kind and outcome (done, retry, dead).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        # The queue as the database holds it (every process reads the same numbers, every
        # JOBS_METRICS_SECONDS; "max" across processes is therefore the value).
        self.jobs_queued = Gauge(
            "jobs_queued",
            "Jobs waiting to run, by kind (delayed ones included).",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.jobs_running = Gauge(
            "jobs_running",
            "Jobs being run (leased), by kind.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.jobs_dead = Gauge(
            "jobs_dead",
            "Jobs that gave up (kept for an operator to retry), by kind.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.jobs_oldest_queued_age = Gauge(
            "jobs_oldest_queued_age_seconds",
            "How long the oldest due job has been waiting, by kind.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.db_round_trips = Counter(
            "db_round_trips",
            "Database round trips: statements, and BEGIN/COMMIT/ROLLBACK.",
            ["kind"],
            registry=self.registry,
        )

    def llm_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self.llm_calls.labels(provider, model, outcome).inc()
        self.llm_seconds.labels(provider, model).observe(seconds)

    def tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        self.llm_tokens.labels(provider, model, "prompt").inc(prompt)
        self.llm_tokens.labels(provider, model, "completion").inc(completion)

    def process_ended(self) -> None:
        """A worker stops: its live gauges leave the multiprocess sums."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # every worker's numbers, summed
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template. Pure ASGI (streams untouched)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(
                time.perf_counter() - started
            )
