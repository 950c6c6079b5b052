"""`aldaemon status`: what each project looks like, from local state alone.

It opens the store without taking the daemon's lock, so it works while the daemon runs
and when Label Studio is down. It shows numbers a labeling lead asks for: labels per
class, how far the next training is, which version annotators see and how good it was,
and whether more labels still change the model (agreement of the last two versions).
"""

from __future__ import annotations

import time
from typing import Any

from aldaemon.config import Config, ProjectConfig
from aldaemon.store import Store, VersionRow
from aldaemon.sync.label_sets import trainable_label_counts
from aldaemon.sync.scoring import cohen_kappa
from aldaemon.sync.versions import (
    LIVE_STATES,
    VersionState,
    label_changes_since_training,
    trained_versions,
)
from aldaemon.views.team import render_team_lines, team_status


def collect(config: Config) -> dict[str, Any]:
    store = Store.from_config(config.state, lock=False)
    try:
        owners = _owners(config)
        return {
            "state_dir": str(config.state.dir),
            "store": store.location,  # the SQLite file, or the DSN without its password
            "model_runner": config.daemon.model_runner,  # "local" or "dask tcp://..."
            "projects": [
                {**project_status(store, project), "owner": owners.get(project.id)}
                for project in config.projects
            ],
        }
    finally:
        store.close()


def _owners(config: Config) -> dict[int, str]:
    """With PostgreSQL, the replica owning each project (none: no replica runs it now)."""
    if config.state.dsn is None:
        return {}
    from aldaemon.store.ownership import project_owners

    return project_owners(config.state.dsn, password=config.state.password)


def project_status(store: Store, project: ProjectConfig) -> dict[str, Any]:
    pid = project.id
    meta = store.get_meta(pid)
    sync = store.sync_state(pid)
    versions = store.list_versions(pid)
    trained = trained_versions(versions)
    since = label_changes_since_training(label_changes=sync.label_changes, versions=versions)
    active = next((v for v in versions if v.state == VersionState.ACTIVE), None)
    cycle = store.last_cycle(pid)
    counts, not_in_config = trainable_label_counts(
        store.annotated_tasks(pid), meta.schema, project.labels.policy
    )
    return {
        "project_id": pid,
        "failure": meta.failure,
        "labels": sum(counts.values()),
        "labels_per_class": counts,
        "labels_not_in_config": not_in_config,
        "label_changes_since_training": since,
        "min_new_annotations": project.retrain.min_new_annotations,
        "last_decision": meta.last_decision,
        # A version a person made active (an implicit pin, see sync.drift) is not ours.
        "active_version": active.name if active else meta.pinned_version,
        "active_metrics": active.metrics if active else None,
        "pinned_version": meta.pinned_version,
        "versions": [
            {
                "name": v.name,
                "state": v.state,
                "n_labels": v.n_labels,
                "predictions": v.n_predictions,
                "metrics": v.metrics,
                "backend_version": v.backend_version,
            }
            for v in versions
            if v.state in LIVE_STATES
        ],
        "agreement_last_two": agreement_of_last_two(store, pid, trained),
        **team_status(store, project),
        "last_poll_at": _iso(sync.last_poll_at),
        "last_cycle": None
        if cycle is None
        else {
            "started_at": _iso(cycle.started_at),
            "finished_at": _iso(cycle.finished_at),
            "outcome": cycle.outcome,
            "summary": cycle.summary,
        },
    }


def agreement_of_last_two(store: Store, project_id: int, trained: list[VersionRow]) -> float | None:
    """Cohen's kappa of the last two versions' labels on the tasks both predicted."""
    with_predictions = [v for v in trained if v.state in LIVE_STATES]
    if len(with_predictions) < 2:
        return None
    older, newer = with_predictions[-2], with_predictions[-1]
    a = {p.task_id: p.label for p in store.load_predictions(project_id, older.name)}
    b = {p.task_id: p.label for p in store.load_predictions(project_id, newer.name)}
    common = sorted(set(a) & set(b))
    kappa = cohen_kappa([a[t] for t in common], [b[t] for t in common])
    return None if kappa is None else round(kappa, 4)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def render_text(report: dict[str, Any]) -> str:
    lines = [f"state: {report['store']}", f"model jobs: {report['model_runner']}"]
    for p in report["projects"]:
        lines.append(
            f"project {p['project_id']}"
            + (f"  owned by {p['owner']}" if p["owner"] else "")
            + (f"  FAILED: {p['failure']}" if p["failure"] else "")
        )
        per_class = ", ".join(f"{k} {v}" for k, v in sorted(p["labels_per_class"].items()))
        lines.append(f"  labels:          {p['labels']} ({per_class or 'none yet'})")
        if p["labels_not_in_config"]:
            others = ", ".join(f"{k} {v}" for k, v in sorted(p["labels_not_in_config"].items()))
            lines.append(f"  labels not in the config: {others} (not trained on)")
        lines.append(
            f"  since training:  {p['label_changes_since_training']}"
            f" of {p['min_new_annotations']} label changes"
        )
        if p["last_decision"]:
            lines.append(f"  last decision:   {p['last_decision']}")
        active = p["active_version"] or "none"
        if p["pinned_version"]:
            active += f" (pinned {p['pinned_version']})"
        metrics = p["active_metrics"] or {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"  active version:  {active}" + (f"  [{shown}]" if shown else ""))
        for v in p["versions"]:
            lines.append(
                f"    {v['name']:<20} {v['state']:<11} {v['predictions'] or 0} predictions,"
                f" trained on {v['n_labels'] or 0} labels"
                + (f", backend {v['backend_version']}" if v["backend_version"] else "")
            )
        if p["agreement_last_two"] is not None:
            lines.append(f"  agreement (kappa) of the last two versions: {p['agreement_last_two']}")
        lines += render_team_lines(p)
        cycle = p["last_cycle"]
        if cycle:
            when = cycle["finished_at"] or cycle["started_at"]
            lines.append(f"  last cycle:      {when} {cycle['outcome']}")
        else:
            lines.append("  last cycle:      never")
    return "\n".join(lines)
