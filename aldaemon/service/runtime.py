"""The runtime shared by every command: store, gateway, model worker, metrics, runners.

`Runtime.run_cycle` is the one way a project's cycle runs, from `aldaemon once`, from the
daemon's scheduler and from a webhook trigger; it hands the cycle to that project's
`ProjectRunner`, which owns the lock, the health transitions and the prune task. The
runtime holds what the runners share, the current config, and the runner of every
project it has seen: a reload that removes a project keeps its runner, so a cycle or
prune still running on it is waited for (shutdown, closing a retired gateway) like any
other, and a project added back starts with fresh health.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aldaemon.config import Config, ProjectConfig
from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.loop.context import CycleContext, CycleReport, IntervalClocks
from aldaemon.model.jobs import ModelJobs
from aldaemon.model.worker import ModelWorker
from aldaemon.service.health import (
    HealthReport,
    ProjectHealth,
    ReplicaView,
    assess_health,
    stale_after,
)
from aldaemon.service.metrics import Metrics
from aldaemon.service.replicas import open_ownership, ownership_round
from aldaemon.service.runner import ProjectRunner
from aldaemon.store import Store

if TYPE_CHECKING:
    from aldaemon.store.ownership import ProjectOwnership


def make_model_jobs(config: Config) -> ModelJobs:
    """The runner of model jobs: the Dask cluster of `[daemon] dask_scheduler`, else a
    local pool of one process per project up to two."""
    if config.daemon.dask_scheduler is None:
        return ModelWorker(max_workers=min(2, max(1, len(config.projects))))
    # Imported only here: distributed is an optional dependency (the `scale` extra).
    from aldaemon.model.dask_worker import DaskModelWorker

    return DaskModelWorker(config.daemon.dask_scheduler)


def make_gateway(config: Config) -> LabelStudioGateway:
    """The gateway for `[labelstudio]`; the one-shot commands open theirs here too."""
    return LabelStudioGateway(
        url=config.labelstudio.url,
        token=config.labelstudio.token,
        timeout=config.labelstudio.timeout,
        max_attempts=config.labelstudio.max_attempts,
    )


class Runtime:
    """Opens the shared resources; use as `async with Runtime(config) as runtime:`."""

    def __init__(
        self, config: Config, *, metrics: Metrics | None = None, replica: bool = False
    ) -> None:
        """`replica`: `aldaemon run`, which shares a PostgreSQL state with other replicas
        and cycles only the projects it owns (service/replicas.py); SQLite: ignored."""
        self.config = config
        self.replica = replica
        self.ownership: ProjectOwnership | None = None
        self.metrics = metrics or Metrics()
        self.store: Store | None = None
        self.gateway: LabelStudioGateway | None = None
        self.worker: ModelJobs | None = None
        self.runners: dict[int, ProjectRunner] = {
            p.id: ProjectRunner(p.id, runtime=self) for p in config.projects
        }
        self._retired_gateways: set[asyncio.Task[None]] = set()
        # Per project, across its cycles: min_interval on the monotonic clock.
        self.interval_clocks: dict[int, IntervalClocks] = {}

    async def __aenter__(self) -> Runtime:
        self.store = Store.from_config(self.config.state, shared=self.replica)
        if self.replica:
            self.ownership = open_ownership(self.config)
            ownership_round(self)
        self.gateway = self._make_gateway(self.config)
        self.worker = make_model_jobs(self.config)
        for project in self.config.projects:
            self.runner(project.id).health.failure = self.store.get_meta(project.id).failure
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close everything, whether or not the block raised (nothing is swallowed)."""
        await self.cancel_prunes()
        if self._retired_gateways:
            await asyncio.gather(*self._retired_gateways, return_exceptions=True)
        if self.worker is not None:
            self.worker.shutdown()
            await self.worker.aclose()
        if self.gateway is not None:
            await self.gateway.close()
        if self.ownership is not None:
            self.ownership.close()
        if self.store is not None:
            self.store.close()

    @staticmethod
    def _make_gateway(config: Config) -> LabelStudioGateway:
        """Tests override this to shorten the gateway's backoff."""
        return make_gateway(config)

    def runner(self, project_id: int) -> ProjectRunner:
        """The project's runner, created on first use."""
        runner = self.runners.get(project_id)
        if runner is None:
            runner = self.runners[project_id] = ProjectRunner(project_id, runtime=self)
        return runner

    async def reload(self, config: Config) -> None:
        """Take a new, already validated config (SIGHUP): new project set, maybe new gateway.

        A project added (or added back) starts with fresh health and the failure the store
        remembers. The gateway is replaced only when `[labelstudio]` changed, and the old
        one is closed only after the cycles and prunes that hold it have finished: closing
        it under them would fail their requests half-way through an upload.
        """
        old_gateway = self.gateway
        labelstudio_changed = config.labelstudio != self.config.labelstudio
        old_ids = {p.id for p in self.config.projects}
        self.config = config
        for project in config.projects:
            if project.id in old_ids:
                continue
            runner = self.runner(project.id)
            failure = self.store.get_meta(project.id).failure if self.store else None
            runner.health = ProjectHealth(failure=failure)
        if old_gateway is None or not labelstudio_changed:
            return
        self.gateway = self._make_gateway(config)
        retire = asyncio.create_task(self._close_when_unused(old_gateway), name="gateway-retire")
        self._retired_gateways.add(retire)
        retire.add_done_callback(self._retired_gateways.discard)

    async def _close_when_unused(self, gateway: LabelStudioGateway) -> None:
        """Wait until every cycle and prune that started before the swap is done, then close."""
        for runner in list(self.runners.values()):
            await runner.wait_for_cycle()
        await self.wait_for_prunes()
        await gateway.close()

    def context(self, project: ProjectConfig) -> CycleContext:
        assert self.store is not None and self.gateway is not None and self.worker is not None
        return CycleContext(
            project=project,
            daemon=self.config.daemon,
            gateway=self.gateway,
            store=self.store,
            worker=self.worker,
            artifacts_dir=self.config.state.dir / "models" / str(project.id),
            intervals=self.interval_clocks.setdefault(project.id, IntervalClocks()),
            still_owner=self.still_owner,
        )

    def still_owner(self, project_id: int) -> bool:
        """Does this process own the project right now (asked of PostgreSQL, with replicas)?"""
        return self.ownership is None or self.ownership.confirm(project_id)

    async def run_cycle(
        self,
        project: ProjectConfig,
        *,
        force_resync: bool = False,
        forced_training: bool = False,
    ) -> CycleReport:
        """Run one cycle of `project` in its turn; never raises for a cycle's own failure."""
        return await self.runner(project.id).run_cycle(
            project, force_resync=force_resync, forced_training=forced_training
        )

    def busy_projects(self) -> list[int]:
        """Projects with a cycle running or a scheduled run going, in id order."""
        return sorted(pid for pid, runner in self.runners.items() if runner.busy)

    def health_report(self, *, now: float, started_at: float) -> HealthReport:
        """`/healthz` for the currently configured projects."""
        project_ids = [p.id for p in self.config.projects]
        ownership = self.ownership
        return assess_health(
            project_ids=project_ids,
            health={pid: self.runner(pid).health for pid in project_ids},
            busy=frozenset(self.busy_projects()),
            now=now,
            started_at=started_at,
            stale_limit=stale_after(self.config),
            replicas=None
            if ownership is None
            else ReplicaView(ownership.replica, ownership.owners, ownership.problem),
            model_runner=self.config.daemon.model_runner,
        )

    async def wait_for_prunes(self) -> None:
        await asyncio.gather(*(runner.wait_for_prune() for runner in list(self.runners.values())))

    async def cancel_prunes(self) -> None:
        """Stop prunes in progress (shutdown grace expired); the next start prunes again.

        A version half-deleted on the server is safe: deleting it again removes the rest.
        """
        await asyncio.gather(*(runner.cancel_prune() for runner in list(self.runners.values())))
