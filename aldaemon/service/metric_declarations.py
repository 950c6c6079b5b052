"""The one way the daemon declares a Prometheus metric: on its own private registry.

Every counter, gauge and histogram of /metrics (service/metrics.py, team_metrics.py) is
made here, so each is registered on the daemon's `CollectorRegistry` (never the global
one, see metrics.py) and declared as name, help text and label names, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Labels = tuple[str, ...]


class MetricDeclarations:
    """Makes metrics on one private registry.

    Help texts: one table per module, metric name -> text (`help_texts`), so a
    declaration is its name, kind and labels. Labels: every metric but the webhooks' is
    per project, so `project` comes first unless `per_project=False`; `by` names the
    labels after it.
    """

    def __init__(self, help_texts: Mapping[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._help = help_texts

    def counter(self, name: str, *, by: Labels = (), per_project: bool = True) -> Counter:
        labels = _labels(by, per_project)
        return Counter(name, self._help[name], labels, registry=self.registry)

    def gauge(self, name: str, *, by: Labels = ()) -> Gauge:
        return Gauge(name, self._help[name], _labels(by, True), registry=self.registry)

    def histogram(self, name: str, *, by: Labels = (), buckets: tuple[float, ...]) -> Histogram:
        labels = _labels(by, True)
        return Histogram(name, self._help[name], labels, buckets=buckets, registry=self.registry)


def _labels(by: Labels, per_project: bool) -> Labels:
    return ("project", *by) if per_project else by
