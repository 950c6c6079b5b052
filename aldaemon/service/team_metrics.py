"""The labeling-team gauges of /metrics: withheld tasks, suspected label errors, stability.

Set after every cycle from local state, like the label gauges (see README "Metrics").
"""

from __future__ import annotations

from aldaemon.config import ProjectConfig
from aldaemon.service.metric_declarations import MetricDeclarations
from aldaemon.store import Store
from aldaemon.sync.consensus import LATEST, withheld_counts
from aldaemon.sync.versions import withheld_tasks

TEAM_HELP = {
    "aldaemon_withheld_tasks": (
        "Labeled tasks the label policy keeps out of training, by reason: "
        "tie|no_majority|not_unanimous."
    ),
    "aldaemon_suspected_label_errors": (
        "Labels the last training's cross-validation confidently contradicts."
    ),
    "aldaemon_stable": "1 when the stop signal says the project is stable, else 0.",
}


class TeamGauges:
    """aldaemon_withheld_tasks, aldaemon_suspected_label_errors, aldaemon_stable."""

    def __init__(self, declare: MetricDeclarations) -> None:
        self.withheld = declare.gauge("aldaemon_withheld_tasks", by=("reason",))
        self.suspects = declare.gauge("aldaemon_suspected_label_errors")
        self.stable = declare.gauge("aldaemon_stable")

    def update(self, label: str, store: Store, project: ProjectConfig) -> None:
        policy = project.labels.policy
        withheld: dict[int, str] = {}
        if policy != LATEST:  # latest withholds nothing: skip reading every label
            withheld = withheld_tasks(store.annotated_tasks(project.id), policy)
        for reason, count in withheld_counts(withheld).items():
            self.withheld.labels(label, reason).set(count)
        self.suspects.labels(label).set(len(store.suspects(project.id)))
        self.stable.labels(label).set(1 if store.stable_since(project.id) else 0)
