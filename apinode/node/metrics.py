"""The node's metrics, read from live state when asked: the admin API's JSON, Prometheus' text.

Per service, generation and endpoint: requests by HTTP status, latency (a histogram; in the
JSON its count, mean, max and estimated quantiles), queue depth, pipelines alive and busy,
rejections (queue full, or queue timeout), execution timeouts, pipelines started (forked or
spawned), starts that failed after the endpoint had loaded, and pipelines recycled by reason.
Counts belong to a loaded generation: they start at zero when it loads and go away when it is
unloaded, like a Prometheus series that ends.

A request costs only `EndpointStats.record`. Both renderings walk the service manager on the event
loop when asked, a few numbers per endpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from . import ray as ray_cluster
from .endpoint import Endpoint
from .service_manager import ServiceManager
from .services import LoadedGeneration, Service
from .stats import LATENCY_BOUNDS, EndpointStats

_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def _endpoints(
    services: ServiceManager, include_private: bool = True
) -> Iterator[tuple[Service, LoadedGeneration, Endpoint]]:
    """Every loaded endpoint; without `include_private`, only those of public generations."""
    for service in list(services.services.values()):
        for generation in service.loaded.values():
            if include_private or generation.definition.public_access:
                for endpoint in generation.endpoints.values():
                    yield service, generation, endpoint


def metrics_json(services: ServiceManager) -> dict[str, Any]:
    """{"services": {id: {"enabled", "generations": {id: {"endpoints": {id: {...}}}}}}}."""
    out: dict[str, Any] = {
        service.id: {"enabled": service.state.enabled, "generations": {}} for service in services.services.values()
    }
    for service, generation, endpoint in _endpoints(services):
        endpoints = out[service.id]["generations"].setdefault(generation.id, {"endpoints": {}})["endpoints"]
        endpoints[endpoint.definition.id] = _endpoint_json(endpoint)
    return {"services": out}


def _endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    stats, pool, counts = endpoint.stats, endpoint.pool, endpoint.counts
    count = stats.count
    latency = {"count": count, "mean": _ms(stats.seconds / count) if count else 0.0, "max": _ms(stats.slowest)}
    latency.update((name, _ms(stats.quantile(q))) for name, q in _QUANTILES.items())
    return {
        "requests": {str(status): n for status, n in sorted(stats.by_status.items())},
        "latencyMs": latency,
        "queueDepth": pool.queued,
        "pipelines": _pipelines(endpoint),
        "rejections": pool.rejected,
        "loadFailed": endpoint.failure is not None,
        "executionTimeouts": counts.timeouts,
        "sentAhead": counts.sent_ahead,
        "pipelineStarts": {"fork": counts.forks, "spawn": counts.spawns, "failed": counts.start_failures},
        "recycled": dict(counts.recycled),
    }


def _pipelines(endpoint: Endpoint) -> dict[str, int]:
    pipelines = {"alive": endpoint.pool.size, "busy": endpoint.pool.busy}
    if ray_cluster.connected():  # --ray: starts waiting for the cluster to have room
        pipelines["waitingForResources"] = endpoint.counts.waiting_for_resources
    return pipelines


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class _NodeCollector(Collector):
    """Prometheus metric families built from the service manager's live state at each scrape;
    private services' series only when `include_private`."""

    def __init__(self, services: ServiceManager, include_private: bool) -> None:
        self.services = services
        self.include_private = include_private

    def collect(self) -> Iterator[Any]:
        labels = ["service", "generation", "endpoint"]
        requests = CounterMetricFamily(
            "apinode_requests", "Requests answered, by HTTP status.", labels=[*labels, "status"]
        )
        latency = HistogramMetricFamily(
            "apinode_request_duration_seconds", "Time from receiving a request to answering it.", labels=labels
        )
        queued = GaugeMetricFamily("apinode_queue_depth", "Requests waiting for a free pipeline.", labels=labels)
        alive = GaugeMetricFamily("apinode_pipelines_alive", "Pipelines running or starting.", labels=labels)
        busy = GaugeMetricFamily("apinode_pipelines_busy", "Pipelines running a request.", labels=labels)
        waiting = GaugeMetricFamily(
            "apinode_pipelines_waiting_for_resources",
            "Pipelines waiting for the Ray cluster to have their resources (--ray).",
            labels=labels,
        )
        rejected = CounterMetricFamily(
            "apinode_rejections", "Requests refused with 503: queue full or queue timeout.", labels=labels
        )
        timeouts = CounterMetricFamily(
            "apinode_execution_timeouts", "Calls answered 504: they ran past executionTimeout.", labels=labels
        )
        sent_ahead = CounterMetricFamily(
            "apinode_calls_sent_ahead", "Calls sent to a busy pipeline to wait there (sendAheadMs).", labels=labels
        )
        starts = CounterMetricFamily(
            "apinode_pipeline_starts", "Pipelines started, forked from a template or spawned.", labels=[*labels, "how"]
        )
        start_failures = CounterMetricFamily(
            "apinode_pipeline_start_failures", "Pipeline starts that failed after the endpoint loaded.", labels=labels
        )
        recycled = CounterMetricFamily(
            "apinode_pipelines_recycled",
            "Pipelines replaced by maxRequests or maxMemoryMb.",
            labels=[*labels, "reason"],
        )
        for service, generation, endpoint in _endpoints(self.services, self.include_private):
            values = [service.id, generation.id, endpoint.definition.id]
            stats, pool = endpoint.stats, endpoint.pool
            for status, count in stats.by_status.items():
                requests.add_metric([*values, str(status)], count)
            latency.add_metric(values, buckets=_buckets(stats), sum_value=stats.seconds)
            queued.add_metric(values, pool.queued)
            alive.add_metric(values, pool.size)
            busy.add_metric(values, pool.busy)
            rejected.add_metric(values, pool.rejected)
            counts = endpoint.counts
            timeouts.add_metric(values, counts.timeouts)
            sent_ahead.add_metric(values, counts.sent_ahead)
            starts.add_metric([*values, "fork"], counts.forks)
            starts.add_metric([*values, "spawn"], counts.spawns)
            start_failures.add_metric(values, counts.start_failures)
            waiting.add_metric(values, counts.waiting_for_resources)
            for reason, count in counts.recycled.items():
                recycled.add_metric([*values, reason], count)
        yield from (
            requests,
            latency,
            queued,
            alive,
            busy,
            rejected,
            timeouts,
            sent_ahead,
            starts,
            start_failures,
            recycled,
            waiting,
        )


_BUCKET_BOUNDS = [*map(str, LATENCY_BOUNDS), "+Inf"]


def _buckets(stats: EndpointStats) -> list[tuple[str, float]]:
    """Cumulative (upper bound, count) pairs, as Prometheus histograms have them."""
    return list(zip(_BUCKET_BOUNDS, itertools.accumulate(stats.buckets)))


class PrometheusMetrics:
    """The text a Prometheus scrape of GET /metrics gets.

    A private service's ids, generations and traffic are its owner's business: they are in the
    text only for a scraper that sends an admin key (`include_private`)."""

    def __init__(self, services: ServiceManager) -> None:
        self._scrapes = {
            include_private: _registry(_NodeCollector(services, include_private)) for include_private in (False, True)
        }

    def text(self, include_private: bool) -> bytes:
        return generate_latest(self._scrapes[include_private])


def _registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
