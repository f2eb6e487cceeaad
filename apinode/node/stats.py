"""What one endpoint of one generation has answered: requests by status and their latency.

Recording costs a dict update, a bisect and two additions per request, on the event loop,
which is the only thread that touches these numbers (so no lock). Readers (the admin
`metrics` call, the Prometheus scrape) take consistent-enough snapshots between requests.
"""

from __future__ import annotations

import bisect

LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the latency histogram's buckets; one more bucket holds the rest."""


class EndpointStats:
    __slots__ = ("buckets", "by_status", "seconds", "slowest")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.seconds = 0.0  # the sum of all latencies
        self.slowest = 0.0

    def record(self, status: int, seconds: float) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.seconds += seconds
        if seconds > self.slowest:
            self.slowest = seconds

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def quantile(self, q: float) -> float:
        """An upper estimate of the q-quantile latency (seconds): its bucket's upper bound."""
        rank = q * self.count
        seen = 0
        for bound, count in zip(LATENCY_BOUNDS, self.buckets):
            seen += count
            if seen >= rank:
                return min(bound, self.slowest)
        return self.slowest


class PipelineCounts:
    """What happened to one endpoint's pipelines: how they started, why they were replaced.

    Written by its pool and its pipeline factory, on the event loop."""

    __slots__ = ("forks", "recycled", "sent_ahead", "spawns", "start_failures", "timeouts", "waiting_for_resources")

    def __init__(self) -> None:
        self.forks = 0  # pipelines forked from a template
        self.spawns = 0  # pipelines started as fresh processes
        self.start_failures = 0  # starts that failed after the endpoint had loaded (retried)
        self.timeouts = 0  # calls answered 504 ExecutionTimeout
        self.sent_ahead = 0  # calls sent to a busy pipeline, to wait there (Pool, sendAheadMs)
        self.recycled: dict[str, int] = {"requests": 0, "memory": 0}  # pipelines replaced, by reason
        self.waiting_for_resources = 0  # starts waiting for a Ray cluster to have room (apinode.node.ray)
