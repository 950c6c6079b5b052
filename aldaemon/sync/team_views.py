"""The data of aldaemon's two team views: "Conflicting labels" and "Suspected label errors".

Label Studio 1.23's Data Manager has no "id in list" filter (operator `in` on
`filter:tasks:id` answers 500), but an `or` of `equal` items works, so a view lists its
tasks as one `equal` item per id. An empty list gets a filter no task matches (id 0);
without any item the view would show every task. The list is cut at `MAX_VIEW_TASKS`
(status and the report still count all of them).
"""

from __future__ import annotations

from collections.abc import Sequence

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
