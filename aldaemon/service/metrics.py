"""The daemon's Prometheus metrics, in one registry of its own.

Why not prometheus-client's global registry: tests build many daemons in one process,
and a second `Counter("aldaemon_cycles_total", ...)` on the global registry raises
"Duplicated timeseries". One `Metrics` object per daemon keeps every instance apart.

Label conventions, so that dashboards can rely on them:
- `project` is the Label Studio project id as a decimal string ("1"), see `project_label`.
- `step` is one of `STEPS`; `kind` (Label Studio errors) is one of `errors.ERROR_KINDS`,
  chosen by `errors.error_kind` from the exception tree.

`aldaemon_seconds_since_last_success` is computed when Prometheus scrapes, from the
`aldaemon_last_success_timestamp_seconds` gauge, so an alert such as "no success for an
hour" needs no `time()` arithmetic in PromQL and still moves while the daemon is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from aldaemon.errors import ERROR_KINDS, error_kind
from aldaemon.service.metric_declarations import MetricDeclarations
from aldaemon.service.team_metrics import TEAM_HELP, TeamGauges

STEPS = ("poll", "reconcile", "train", "score", "upload", "activate", "view", "prune")
WEBHOOK_OUTCOMES = (
    "accepted",  # a poll was requested
    "ignored",  # authentic, but the action cannot change tasks or annotations
    "unauthorized",
    "bad_request",
    "too_large",
    "unknown_project",
)

HELP = {
    "aldaemon_cycles": "Project cycles run, by outcome: ok, idle (no training due), failed.",
    "aldaemon_cycle_duration_seconds": "Wall-clock duration of one project cycle.",
    "aldaemon_step_duration_seconds": (
        "Wall-clock duration of one step of a cycle: " + "/".join(STEPS) + "."
    ),
    "aldaemon_trainings": "Models trained.",
    "aldaemon_predictions_uploaded": "Predictions Label Studio confirmed as created.",
    "aldaemon_versions_pruned": "Own model versions deleted from Label Studio.",
    "aldaemon_labelstudio_errors": (
        "Failed Label Studio calls, by kind: " + "|".join(ERROR_KINDS) + "."
    ),
    "aldaemon_labelstudio_requests": "Requests sent to Label Studio.",
    "aldaemon_labels": "Labels that train, per label of the labeling config.",
    "aldaemon_labels_not_in_config": (
        "Labels the labeling config does not have (left out of training), per label."
    ),
    "aldaemon_labels_since_training": "New or changed labels since the last training.",
    "aldaemon_last_success_timestamp_seconds": "Unix time of the project's last successful cycle.",
    "aldaemon_webhooks": "Webhook requests, by outcome: " + "|".join(WEBHOOK_OUTCOMES) + ".",
    "aldaemon_project_owned": (
        "1 while this replica owns the project, else 0 (replicas over PostgreSQL)."
    ),
}

# Cycles run from well under a second (nothing new) to minutes (training, a slow prune).
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def project_label(project_id: int) -> str:
    """The `project` label value for a project id; one spelling everywhere."""
    return str(project_id)


class _SecondsSinceLastSuccess:
    """A collector that derives the age of the last success at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "aldaemon_seconds_since_last_success",
            "Seconds since the project's last successful cycle (absent before the first).",
            labels=["project"],
        )
        now = self._metrics.clock()
        for project, timestamp in self._metrics.last_success_timestamps().items():
            family.add_metric([project], max(0.0, now - timestamp))
        yield family


class Metrics:
    """Every metric the daemon exports, registered on a private `CollectorRegistry`."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        """`clock` returns Unix seconds; tests pass a fixed one."""
        self.clock = clock
        declare = MetricDeclarations({**HELP, **TEAM_HELP})
        self.registry = declare.registry
        self.cycles = declare.counter("aldaemon_cycles", by=("outcome",))
        self.cycle_duration = declare.histogram(
            "aldaemon_cycle_duration_seconds", buckets=_DURATION_BUCKETS
        )
        self.step_duration = declare.histogram(
            "aldaemon_step_duration_seconds", by=("step",), buckets=_DURATION_BUCKETS
        )
        self.trainings = declare.counter("aldaemon_trainings")
        self.predictions_uploaded = declare.counter("aldaemon_predictions_uploaded")
        self.versions_pruned = declare.counter("aldaemon_versions_pruned")
        self.labelstudio_errors = declare.counter("aldaemon_labelstudio_errors", by=("kind",))
        self.labelstudio_requests = declare.counter("aldaemon_labelstudio_requests")
        self.labels = declare.gauge("aldaemon_labels", by=("label",))
        self.labels_not_in_config = declare.gauge("aldaemon_labels_not_in_config", by=("label",))
        self.labels_since_training = declare.gauge("aldaemon_labels_since_training")
        self.last_success = declare.gauge("aldaemon_last_success_timestamp_seconds")
        self.webhooks = declare.counter("aldaemon_webhooks", by=("outcome",), per_project=False)
        self.owned = declare.gauge("aldaemon_project_owned", by=("replica",))
        self.team = TeamGauges(declare)
        self.registry.register(_SecondsSinceLastSuccess(self))

    def record_success(self, project_id: int, *, at: float | None = None) -> None:
        """Stamp the project's last success (now, by `clock`, unless `at` is given)."""
        when = self.clock() if at is None else at
        self.last_success.labels(project=project_label(project_id)).set(when)

    def set_label_counts(
        self, project: str, *, trained: Mapping[str, int], not_in_config: Mapping[str, int]
    ) -> None:
        """Both label gauges of one project; a label gone from a count leaves its gauge."""
        for gauge, counts in ((self.labels, trained), (self.labels_not_in_config, not_in_config)):
            shown = {
                sample.labels["label"]
                for family in gauge.collect()
                for sample in family.samples
                if sample.labels["project"] == project
            }
            for label in shown - counts.keys():
                gauge.remove(project, label)
            for label, count in counts.items():
                gauge.labels(project, label).set(count)

    def record_ownership(self, replica: str, owned: Mapping[int, bool]) -> None:
        """This replica's `aldaemon_project_owned`, one series per configured project."""
        for project_id, owns in owned.items():
            self.owned.labels(project_label(project_id), replica).set(1 if owns else 0)

    def record_labelstudio_error(self, project_id: int, error: BaseException) -> None:
        """Count one failed Label Studio call under the kind its exception maps to."""
        self.labelstudio_errors.labels(
            project=project_label(project_id), kind=error_kind(error)
        ).inc()

    def last_success_timestamps(self) -> dict[str, float]:
        """The `last_success` gauge as {project label: Unix seconds}."""
        stamps: dict[str, float] = {}
        for family in self.last_success.collect():
            for sample in family.samples:
                if sample.value > 0:  # a child created by `.labels()` but never set
                    stamps[sample.labels["project"]] = sample.value
        return stamps

    def seconds_since_last_success(self, project_id: int) -> float | None:
        """Age of the project's last success by `clock`, or None before the first one."""
        timestamp = self.last_success_timestamps().get(project_label(project_id))
        if timestamp is None:
            return None
        return max(0.0, self.clock() - timestamp)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def render_for(self, accept_header: str) -> tuple[bytes, str]:
        """The exposition the scraper asked for (text or OpenMetrics) and its content type."""
        encoder, content_type = choose_encoder(accept_header)
        return encoder(self.registry), content_type
