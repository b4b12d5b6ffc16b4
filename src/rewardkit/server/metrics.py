"""Prometheus metrics of one server, on its own registry (so that many apps can coexist)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = tuple(float(2**i) for i in range(11))  # 1 … 1024 conversations
TOKEN_BUCKETS = tuple(float(2**i) for i in range(6, 19))  # 64 … 262144 tokens
REWARD_BUCKETS = (-16.0, -8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class ServerMetrics:
    """Counters, gauges and histograms exposed at ``GET /metrics``.

    Args:
        registry: where to register; a fresh ``CollectorRegistry`` when ``None``.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rewardkit_requests", "HTTP requests by route and status code", ["route", "code"], registry=r
        )
        self.errors = Counter(
            "rewardkit_request_errors", "HTTP responses with status >= 400", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            "rewardkit_request_duration_seconds",
            "request latency, arrival to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("rewardkit_inflight_requests", "requests being handled", registry=r)
        self.queue_depth = Gauge(
            "rewardkit_queue_depth", "conversations admitted and not yet scored", registry=r
        )
        self.batch_size = Histogram(
            "rewardkit_batch_conversations",
            "conversations per engine batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "rewardkit_batch_tokens", "tokens per engine batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "rewardkit_batch_duration_seconds", "engine time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_failures = Counter("rewardkit_batch_failures", "engine batches that raised", registry=r)
        self.tokens = Counter("rewardkit_scored_tokens", "tokens scored", registry=r)
        self.conversations = Counter("rewardkit_scored_conversations", "conversations scored", registry=r)
        self.tokens_per_second = Gauge(
            "rewardkit_tokens_per_second", "throughput of the last engine batch", registry=r
        )
        self.truncations = Counter(
            "rewardkit_truncated_conversations", "conversations shortened by the length policy", registry=r
        )
        self.rewards = Histogram(
            "rewardkit_reward", "distribution of returned rewards", buckets=REWARD_BUCKETS, registry=r
        )

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route=route, code=str(code)).inc()
        if code >= 400:
            self.errors.labels(route=route, code=str(code)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, *, conversations: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(conversations)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(tokens)
        self.conversations.inc(conversations)
        if seconds > 0:
            self.tokens_per_second.set(tokens / seconds)

    def observe_results(self, rewards: Sequence[float], truncated: int) -> None:
        for r in rewards:
            self.rewards.observe(r)
        if truncated:
            self.truncations.inc(truncated)

    def render(self) -> bytes:
        return generate_latest(self.registry)
