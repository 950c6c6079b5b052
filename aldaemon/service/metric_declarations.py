"""The one way the daemon declares a Prometheus metric: on its own private registry.

Every counter, gauge and histogram of /metrics (service/metrics.py, team_metrics.py) is
made here, so each is registered on the daemon's `CollectorRegistry` (never the global
one, see metrics.py) and declared as name, help text and label names, nothing else.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Labels = tuple[str, ...]


class MetricDeclarations:
    """Makes metrics on one private registry.

    Labels: every metric but the webhooks' is per project, so `project` comes first
    unless `per_project=False`; `by` names the labels after it.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def counter(
        self, name: str, documentation: str, *, by: Labels = (), per_project: bool = True
    ) -> Counter:
        return Counter(name, documentation, _labels(by, per_project), registry=self.registry)

    def gauge(self, name: str, documentation: str, *, by: Labels = ()) -> Gauge:
        return Gauge(name, documentation, _labels(by, True), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, *, by: Labels = (), buckets: tuple[float, ...]
    ) -> Histogram:
        labels = _labels(by, True)
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)


def _labels(by: Labels, per_project: bool) -> Labels:
    return ("project", *by) if per_project else by
