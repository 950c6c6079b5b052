"""The data of aldaemon's two team views: "Conflicting labels" and "Suspected label errors".

Label Studio 1.23's Data Manager has no "id in list" filter (operator `in` on
`filter:tasks:id` answers 500), but an `or` of `equal` items works, so a view lists its
tasks as one `equal` item per id. An empty list gets a filter no task matches (id 0);
without any item the view would show every task. The list is cut at `MAX_VIEW_TASKS`
(status and the report still count all of them).

A view a person deleted is noticed in two ways: rewriting a changed list answers 404, and
after every resync (periodic, and before each training) the views are listed once and a
stored id missing from the listing is recreated. An unchanged list costs no request
between resyncs.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence

CONFLICTS_VIEW_TITLE = "Conflicting labels"
SUSPECTS_VIEW_TITLE = "Suspected label errors"
MAX_VIEW_TASKS = 500
_NO_TASK = 0


def task_list_view_data(*, title: str, task_ids: Sequence[int]) -> dict[str, object]:
    """The whole `data` of a view that lists exactly `task_ids` (the first MAX_VIEW_TASKS)."""
    ids = list(dict.fromkeys(task_ids))[:MAX_VIEW_TASKS] or [_NO_TASK]
    return {
        "title": title,
        "type": "list",
        "target": "tasks",
        "filters": {
            "conjunction": "or",
            "items": [
                {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": i}
                for i in ids
            ],
        },
        "ordering": ["tasks:id"],
        "hiddenColumns": {"explore": [], "labeling": []},
    }


class ViewStep(enum.Enum):
    """What to do with one team view this cycle."""

    KEEP = "keep"  # it exists (as far as we know) and lists what it should
    REWRITE = "rewrite"  # its list changed: replace its data in place
    RECREATE = "recreate"  # the listing no longer has it: a person deleted it
    FIND = "find"  # no id stored yet: adopt ours by title (after a crash) or create it


def team_view_step(
    *,
    view_id: int | None,
    written: Sequence[int] | None,
    task_ids: Sequence[int],
    listed_ids: Collection[int] | None,
) -> ViewStep:
    """The step for a view stored as `view_id` that last listed `written`.

    `listed_ids` is the project's view ids when they were listed this cycle, else None.
    """
    if view_id is None:
        return ViewStep.FIND
    if listed_ids is not None and view_id not in listed_ids:
        return ViewStep.RECREATE
    if written is not None and list(written) == list(task_ids):
        return ViewStep.KEEP
    return ViewStep.REWRITE


def views_check_due(*, last_resync_at: float | None, checked_at: float | None) -> bool:
    """Whether to list the views for deleted ones: once after each resync (and at first)."""
    if checked_at is None:
        return True
    return last_resync_at is not None and last_resync_at > checked_at
