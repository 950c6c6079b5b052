"""The metrics registry: names, independence, scrape-time age, error kinds."""

from __future__ import annotations

import pytest

from aldaemon import errors
from aldaemon.errors import error_kind
from aldaemon.service.metrics import Metrics

EXPORTED_NAMES = (
    "aldaemon_cycles_total",
    "aldaemon_cycle_duration_seconds",
    "aldaemon_step_duration_seconds",
    "aldaemon_trainings_total",
    "aldaemon_predictions_uploaded_total",
    "aldaemon_versions_pruned_total",
    "aldaemon_labelstudio_errors_total",
    "aldaemon_labelstudio_requests_total",
    "aldaemon_labels",
    "aldaemon_labels_not_in_config",
    "aldaemon_labels_since_training",
    "aldaemon_last_success_timestamp_seconds",
    "aldaemon_webhooks_total",
    "aldaemon_seconds_since_last_success",
)


class FakeClock:
    """A settable Unix clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class TestRender:
    @pytest.mark.parametrize("name", EXPORTED_NAMES)
    def test_every_metric_is_described_in_the_exposition(self, name: str) -> None:
        """Every metric has a HELP line even before it has a sample."""
        text = Metrics().render().decode()
        assert f"# HELP {name} " in text

    def test_a_recorded_sample_appears_with_its_labels(self) -> None:
        """A counted cycle appears as a sample labelled with project and outcome."""
        metrics = Metrics()
        metrics.cycles.labels(project="3", outcome="success").inc()
        text = metrics.render().decode()
        assert 'aldaemon_cycles_total{outcome="success",project="3"} 1.0' in text

    def test_openmetrics_is_served_when_asked_for(self) -> None:
        """An OpenMetrics Accept header gets the OpenMetrics content type and EOF marker."""
        body, content_type = Metrics().render_for("application/openmetrics-text; version=1.0.0")
        assert ("application/openmetrics-text", True) == (
            content_type.split(";")[0],
            body.endswith(b"# EOF\n"),
        )


class TestIndependence:
    def test_two_instances_do_not_share_samples(self) -> None:
        """Counting on one Metrics leaves another untouched (no global registry)."""
        first, second = Metrics(), Metrics()
        first.trainings.labels(project="1").inc()
        assert (1.0, None) == (
            sample(first, "aldaemon_trainings_total", {"project": "1"}),
            sample(second, "aldaemon_trainings_total", {"project": "1"}),
        )


class TestLabelCounts:
    def test_a_label_gone_from_a_count_leaves_its_gauge(self) -> None:
        """'neg' renamed 'negative': its labels move from one gauge to the other."""
        metrics = Metrics()
        metrics.set_label_counts("1", trained={"pos": 3, "neg": 2}, not_in_config={})
        metrics.set_label_counts("1", trained={"pos": 3}, not_in_config={"neg": 2})
        assert (3.0, None, 2.0) == (
            sample(metrics, "aldaemon_labels", {"project": "1", "label": "pos"}),
            sample(metrics, "aldaemon_labels", {"project": "1", "label": "neg"}),
            sample(metrics, "aldaemon_labels_not_in_config", {"project": "1", "label": "neg"}),
        )

    def test_other_projects_keep_their_labels(self) -> None:
        metrics = Metrics()
        metrics.set_label_counts("1", trained={"pos": 3}, not_in_config={})
        metrics.set_label_counts("2", trained={"neg": 1}, not_in_config={})
        assert 3.0 == sample(metrics, "aldaemon_labels", {"project": "1", "label": "pos"})


class TestSecondsSinceLastSuccess:
    def test_age_is_clock_minus_last_success(self) -> None:
        """The age is the clock's now minus the recorded success time."""
        clock = FakeClock(1000.0)
        metrics = Metrics(clock=clock)
        metrics.record_success(7, at=940.0)
        assert 60.0 == metrics.seconds_since_last_success(7)

    def test_age_is_none_before_the_first_success(self) -> None:
        """A project that never succeeded has no age."""
        assert None is Metrics().seconds_since_last_success(7)

    def test_exported_age_is_computed_at_scrape_time(self) -> None:
        """The exported gauge grows with the clock without anyone setting it."""
        clock = FakeClock(1000.0)
        metrics = Metrics(clock=clock)
        metrics.record_success(7)
        clock.now = 1090.0
        assert 90.0 == sample(metrics, "aldaemon_seconds_since_last_success", {"project": "7"})

    def test_age_reads_the_public_gauge(self) -> None:
        """Setting last_success directly (not via record_success) also drives the age."""
        metrics = Metrics(clock=FakeClock(500.0))
        metrics.last_success.labels(project="2").set(480.0)
        assert 20.0 == metrics.seconds_since_last_success(2)

    def test_an_unset_child_is_not_reported_as_ancient(self) -> None:
        """A last_success child created but never set exports no age."""
        metrics = Metrics(clock=FakeClock(500.0))
        metrics.last_success.labels(project="2")
        assert None is sample(metrics, "aldaemon_seconds_since_last_success", {"project": "2"})


class TestLabelStudioErrorKind:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (errors.LabelStudioUnreachable("timeout"), "unreachable"),
            (errors.LabelStudioAuthError("401", status_code=401), "auth"),
            (errors.ProjectNotFound("404", status_code=404), "not_found"),
            (errors.LabelStudioRefused("400", status_code=400), "refused"),
            (errors.LabelStudioError("?"), "other"),
            (RuntimeError("bug"), "other"),
        ],
    )
    def test_each_error_class_maps_to_its_kind(self, error: Exception, expected: str) -> None:
        """The most specific class in the error tree decides the kind label."""
        assert expected == error_kind(error)

    def test_record_counts_under_the_mapped_kind(self) -> None:
        """Recording an auth error increments the project's auth series."""
        metrics = Metrics()
        metrics.record_labelstudio_error(4, errors.LabelStudioAuthError("no", status_code=401))
        labels = {"project": "4", "kind": "auth"}
        assert 1.0 == sample(metrics, "aldaemon_labelstudio_errors_total", labels)
