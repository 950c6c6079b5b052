"""What changed in Label Studio under aldaemon, and the one rule for each change. Pure.

aldaemon owns a few things in a project: the active version while it is one of its own,
uncertainty sampling, its versions' names (`<prefix>-v<n>`). People and other programs
can change them. Every poll already reads the project's `model_version` and `sampling`,
so each change is found at the next poll without an extra request, and decided here:

    another writer of the prefix   a "<prefix>-v<n>" this state dir never sent, numbered
                                   within its own range, is active or about to be reused:
                                   refuse to publish (the project is failed) until one
                                   state dir per project and prefix is left
    sampling changed               restore uncertainty sampling (plainly aldaemon's)
    our uploaded version active    aldaemon's own activation, cut short by a crash between
                                   Label Studio's answer and the store's record: finished
                                   (only aldaemon activates an uploaded, never-active version)
    another version made active    a person chose it: respected as a pin until
                                   `aldaemon unpin`; new versions are uploaded, not activated
    no active version any more     its predictions were deleted (checked by one count
                                   request): its stored predictions are uploaded again and
                                   it is activated again; else it is just activated again
    the queue view edited/deleted  restored (plainly aldaemon's); checked at each periodic
                                   full id listing, `resync_interval`, with one view
                                   listing (every poll would break the 2-request idle poll)

A state dir that knows no version at all (a first start, `aldaemon state rebuild`) adopts
the versions of its prefix it finds: it numbers past them, as a rebuilt state must.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aldaemon.sync.versions import VersionRow, VersionState, own_version_number


class DriftKind(enum.StrEnum):
    SAMPLING = "sampling"
    ACTIVE_SWITCHED = "active_version"
    ACTIVE_LOST = "active_version_lost"
    ACTIVATION_INTERRUPTED = "activation_interrupted"
    QUEUE_VIEW = "queue_view"


# What aldaemon owns of its queue view's data; other keys (column widths, hidden columns)
# are the annotators' to arrange.
QUEUE_VIEW_KEYS = ("title", "filters", "ordering")


@dataclass(frozen=True)
class Drift:
    """One change found: what, what Label Studio has, what aldaemon expected."""

    what: DriftKind
    found: str | None
    expected: str | None
    action: str


def sent_versions(ours: Iterable[VersionRow]) -> set[str]:
    """Our versions whose predictions this state dir started sending to Label Studio."""
    return {
        row.name
        for row in ours
        if row.uploaded_count is not None
        or row.state
        in (
            VersionState.UPLOADING,
            VersionState.UPLOADED,
            VersionState.ACTIVE,
            VersionState.SUPERSEDED,
            VersionState.PRUNED,
        )
    }


def foreign_versions(
    *, prefix: str, names_on_server: Iterable[str], ours: Sequence[VersionRow]
) -> list[str]:
    """Names of our prefix in Label Studio that another writer put there, sorted.

    Another writer: not sent by this state dir, and numbered at or above the first number
    it used (lower ones predate it: a rebuilt state adopts them). A state dir with no
    version adopts all of them.
    """
    if not ours:
        return []
    first = min(row.number for row in ours)
    sent = sent_versions(ours)
    found = [
        (number, name)
        for name in names_on_server
        if (number := own_version_number(prefix, name)) is not None
        and number >= first
        and name not in sent
    ]
    return [name for _, name in sorted(found)]


def foreign_writer_message(*, prefix: str, names: Sequence[str]) -> str:
    return (
        f"another writer publishes versions named {prefix}-v<n> in this project "
        f"({', '.join(names)} in Label Studio were not published from this state dir): "
        "aldaemon publishes nothing more here so that no task gets two predictions of one "
        "version. Run one aldaemon (one state dir) per project and version_prefix, or give "
        "this one another [projects.predictions] version_prefix, then reload"
    )


def detect_drift(
    *,
    ls_model_version: str | None,
    ls_sampling: str | None,
    ours: Sequence[VersionRow],
    pinned: str | None,
    uncertainty_sampling: str,
) -> Drift | None:
    """The change a person made to what aldaemon owns, if any (one per poll: the rules
    below act on it, so the next poll finds the next one)."""
    active = next((row for row in ours if row.state == VersionState.ACTIVE), None)
    if pinned is not None or active is None:
        return None  # a pin (explicit or implicit) leaves the project to the person
    found = ls_model_version or None
    if found is None:
        return Drift(
            DriftKind.ACTIVE_LOST,
            found=None,
            expected=active.name,
            action="re-activated; its stored predictions are uploaded again first if "
            "they were deleted",
        )
    if found != active.name and _uploaded_never_active(found, ours):
        return Drift(
            DriftKind.ACTIVATION_INTERRUPTED,
            found=found,
            expected=active.name,
            action=f"activation of {found} finished: a crash came between Label Studio's "
            "answer and the store's record",
        )
    if found != active.name:
        return Drift(
            DriftKind.ACTIVE_SWITCHED,
            found=found,
            expected=active.name,
            action=f"respected as a pin: {found} stays active, new versions are uploaded "
            "but not activated until `aldaemon unpin`",
        )
    if ls_sampling != uncertainty_sampling:
        return Drift(
            DriftKind.SAMPLING,
            found=ls_sampling,
            expected=uncertainty_sampling,
            action="restored: the queue serves the most informative task first",
        )
    return None


def _uploaded_never_active(name: str, ours: Sequence[VersionRow]) -> bool:
    """`name` is ours, fully uploaded and never recorded active: a person could only have
    chosen it in the moment between its upload and its activation."""
    return any(row.name == name and row.state == VersionState.UPLOADED for row in ours)


def lost_predictions(*, name: str, counts: Mapping[str, int]) -> bool:
    """After `ACTIVE_LOST`: Label Studio holds none of the version's predictions."""
    return counts.get(name, 0) == 0


def queue_view_drift(
    *, found: Mapping[str, object] | None, expected: Mapping[str, object]
) -> Drift | None:
    """How a person changed aldaemon's queue view (`found` is its data, None: deleted)."""
    if found is None:
        return Drift(
            DriftKind.QUEUE_VIEW,
            found="deleted",
            expected=str(expected.get("title")),
            action="recreated",
        )
    changed = [key for key in QUEUE_VIEW_KEYS if _owned(found, key) != _owned(expected, key)]
    if not changed:
        return None
    return Drift(
        DriftKind.QUEUE_VIEW,
        found="; ".join(f"{key} {found.get(key)!r}" for key in changed),
        expected="; ".join(f"{key} {expected.get(key)!r}" for key in changed),
        action="restored: unlabeled tasks of the active version, lowest score first",
    )


def _owned(data: Mapping[str, object], key: str) -> object:
    """A key of a view's data as compared: filter items by their four fields only."""
    value = data.get(key)
    if key != "filters" or not isinstance(value, Mapping):
        return value
    items = value.get("items")
    fields = ("filter", "operator", "type", "value")
    return (
        value.get("conjunction"),
        [
            tuple(item.get(name) for name in fields) if isinstance(item, Mapping) else item
            for item in (items if isinstance(items, list) else [])
        ],
    )
