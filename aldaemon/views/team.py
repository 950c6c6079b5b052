"""The labeling-team part of `aldaemon status` and the report: withheld tasks, suspected
label errors, and whether the project is stable (see README "Working with a team")."""

from __future__ import annotations

import html
from typing import Any

from aldaemon.config import ProjectConfig
from aldaemon.store import Store
from aldaemon.sync.consensus import LATEST, withheld_counts
from aldaemon.sync.versions import withheld_tasks

SUSPECTS_LISTED = 20


def team_status(store: Store, project: ProjectConfig) -> dict[str, Any]:
    """`stable_since`, `suspected_label_errors` (a count), `withheld` (counts by reason)."""
    pid = project.id
    policy = project.labels.policy
    withheld: dict[int, str] = {}
    if policy != LATEST:  # latest withholds nothing: skip reading every label
        withheld = withheld_tasks(store.annotated_tasks(pid), policy)
    suspects = store.suspects(pid)
    return {
        "label_policy": project.labels.policy,
        "withheld": withheld_counts(withheld),
        "suspected_label_errors": len(suspects),
        "suspected_label_error_task_ids": suspects[:SUSPECTS_LISTED],
        "stable_since": store.stable_since(pid),
    }


def render_team_lines(p: dict[str, Any]) -> list[str]:
    """The text lines of `team_status` for `aldaemon status` and the report."""
    withheld = ", ".join(f"{reason} {n}" for reason, n in p["withheld"].items() if n)
    lines = [
        f"  label policy:    {p['label_policy']}" + (f" (withheld: {withheld})" if withheld else "")
    ]
    if p["suspected_label_errors"]:
        first = ", ".join(str(t) for t in p["suspected_label_error_task_ids"][:10])
        lines.append(
            f"  suspected label errors: {p['suspected_label_errors']} (most suspect first: {first})"
        )
    lines.append(f"  stable since:    {p['stable_since'] or 'not yet'}")
    return lines


def render_team_html(team: dict[str, Any] | None) -> str:
    """The report's "Labeling team" section (escaped; empty without team data)."""
    if not team:
        return ""
    withheld = ", ".join(f"{reason} {n}" for reason, n in team["withheld"].items()) or "none"
    suspects = ", ".join(str(t) for t in team["suspected_label_error_task_ids"]) or "none"
    stable = team["stable_since"] or "not yet"
    return (
        "<h2>Labeling team</h2><ul>"
        f"<li>label policy: {html.escape(team['label_policy'])}; withheld tasks by reason: "
        f'{html.escape(withheld)} (Data Manager view "Conflicting labels")</li>'
        f"<li>suspected label errors: {team['suspected_label_errors']} (most suspect first: "
        f'{html.escape(suspects)}; view "Suspected label errors")</li>'
        f"<li>stable since: {html.escape(stable)}</li></ul>"
    )
