"""Projects and Data Manager views: what the daemon reads of a project and the few
settings it changes (the active model version, the sampling, its own queue view).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from aldaemon.labelstudio import payloads
from aldaemon.labelstudio.http import GatewayPart
from aldaemon.labelstudio.retry import Replay
from aldaemon.records import ProjectInfo, ViewInfo

UNCERTAINTY_SAMPLING = "Uncertainty sampling"  # serves the lowest prediction score first
SAMPLING_MODES = frozenset({"Sequential sampling", "Uniform sampling", UNCERTAINTY_SAMPLING})


class NotGiven(enum.Enum):
    """Sentinel type for "leave this field as it is" in `update_project`."""

    NOT_GIVEN = "not given"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN


class ProjectCalls(GatewayPart):
    """The project and view calls of `LabelStudioGateway`."""

    async def check_auth(self) -> None:
        """One cheap authenticated call; raises LabelStudioAuthError for a bad token."""
        await self._http.sdk_call(lambda: self._http.sdk.users.whoami(), operation="check_auth")

    async def get_project(self, project_id: int) -> ProjectInfo:
        project = await self._http.sdk_call(
            lambda: self._http.sdk.projects.get(id=project_id),
            operation="get_project",
            project_id=project_id,
        )
        return payloads.parse_project(project.dict())

    async def list_views(self, project_id: int) -> list[ViewInfo]:
        answer = await self._http.request(
            "GET",
            "/api/dm/views/",
            params={"project": project_id},
            operation="list_views",
            project_id=project_id,
        )
        return [payloads.parse_view(view) for view in answer or []]

    async def update_project(
        self,
        project_id: int,
        *,
        model_version: str | NotGiven | None = NOT_GIVEN,
        sampling: str | NotGiven | None = NOT_GIVEN,
        show_collab_predictions: bool | NotGiven | None = NOT_GIVEN,
    ) -> ProjectInfo:
        """Change only the given fields. `model_version=None` clears the active version.

        Label Studio 1.23 refuses a null model_version (400) but takes "" for "none", and
        refuses a version that has no predictions yet: upload first, then switch.
        """
        changes: dict[str, object] = {}
        if not isinstance(model_version, NotGiven):
            changes["model_version"] = model_version or ""
        if not isinstance(sampling, NotGiven) and sampling is not None:
            if sampling not in SAMPLING_MODES:
                raise ValueError(f"sampling must be one of {sorted(SAMPLING_MODES)}")
            changes["sampling"] = sampling
        if (
            not isinstance(show_collab_predictions, NotGiven)
            and show_collab_predictions is not None
        ):
            changes["show_collab_predictions"] = show_collab_predictions
        if not changes:
            return await self.get_project(project_id)
        answer = await self._project_request(
            "PATCH", project_id, "", json_body=changes, operation="update_project"
        )
        return payloads.parse_project(answer)

    async def create_view(self, project_id: int, *, data: Mapping[str, object]) -> ViewInfo:
        answer = await self._http.request(
            "POST",
            "/api/dm/views/",
            json_body={"project": project_id, "data": dict(data)},
            operation="create_view",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
        )
        return payloads.parse_view(answer)

    async def replace_view(
        self, view_id: int, *, project_id: int, data: Mapping[str, object]
    ) -> ViewInfo:
        """Replace the view's whole `data` (Label Studio's PATCH does not merge it).

        A 404 here means the view is gone, not the project: LabelStudioRefused(status 404).
        """
        answer = await self._http.request(
            "PATCH",
            f"/api/dm/views/{view_id}/",
            json_body={"project": project_id, "data": dict(data)},
            operation="replace_view",
        )
        return payloads.parse_view(answer)
