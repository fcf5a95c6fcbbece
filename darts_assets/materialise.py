"""Materialise the whole asset graph on a persistent instance, stage by stage.

Assets are grouped into stages: an asset sits one stage after any parent with a different partitioning
(scene -> year -> ...), in the same stage as parents with the same one. Each stage runs its job once per
partition key that is not materialised yet, so a rerun only fills gaps and failed partitions. A failed
partition does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dagster import AssetKey, AssetsDefinition, DagsterInstance, Definitions, JobDefinition, PartitionsDefinition

# The event log keeps everything; the console shows warnings and errors only.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Stage:
    job_name: str
    asset_keys: tuple[AssetKey, ...]
    partitions_def: PartitionsDefinition | None


@dataclass
class RunOutcome:
    partition_key: str | None
    success: bool
    seconds: float
    error: str | None = None


@dataclass
class StageReport:
    stage: Stage
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]


def plan_stages(defs: Definitions) -> list[Stage]:
    """Group the graph's assets into stages in dependency order, each run by the job that selects them.

    An asset sits at least one stage after a parent run by another job. Each asset is placed as late as its
    children allow (so e.g. the year coverage waits for the year Level 2 and both run in one run per year):
    fewer stages, fewer runs.
    """
    assets = {key: asset for asset in iter_assets(defs) for key in asset.keys}
    jobs = iter_asset_jobs(defs)
    job_of = {key: next(job.name for job in jobs if key in job.asset_layer.selected_asset_keys) for key in assets}
    parents = {key: [p for p in assets[key].asset_deps[key] if p in assets] for key in assets}
    children: dict[AssetKey, list[AssetKey]] = {key: [] for key in assets}
    for key, keys in parents.items():
        for parent in keys:
            children[parent].append(key)
    earliest: dict[AssetKey, int] = {}

    def earliest_level(key: AssetKey) -> int:
        if key not in earliest:
            earliest[key] = max((earliest_level(p) + (job_of[p] != job_of[key]) for p in parents[key]), default=0)
        return earliest[key]

    last = max((earliest_level(key) for key in assets), default=0)
    latest: dict[AssetKey, int] = {}

    def latest_level(key: AssetKey) -> int:
        if key not in latest:
            latest[key] = min((latest_level(c) - (job_of[c] != job_of[key]) for c in children[key]), default=last)
        return latest[key]

    groups: dict[tuple[int, str], list[AssetKey]] = {}
    for key in sorted(assets, key=lambda k: k.to_user_string()):
        groups.setdefault((latest_level(key), job_of[key]), []).append(key)
    return [
        Stage(job_name=job_name, asset_keys=tuple(keys), partitions_def=assets[keys[0]].partitions_def)
        for (_, job_name), keys in sorted(groups.items())
    ]


def iter_assets(defs: Definitions) -> Iterable[AssetsDefinition]:
    graph = defs.resolve_asset_graph()
    return [graph.get(key).assets_def for key in graph.get_all_asset_keys() if graph.get(key).is_materializable]


def iter_asset_jobs(defs: Definitions) -> list[JobDefinition]:
    repository = defs.get_repository_def()
    return [job for job in repository.get_all_jobs() if not job.name.startswith("__")]


def missing_partitions(instance: DagsterInstance, stage: Stage, keys: Iterable[str | None]) -> list[str | None]:
    """The partition keys (None for unpartitioned) for which some asset of the stage is not materialised."""
    if stage.partitions_def is None:
        done = all(instance.get_latest_materialization_event(key) for key in stage.asset_keys)
        return [] if done else [None]
    materialised = [instance.get_materialized_partitions(key) for key in stage.asset_keys]
    return [key for key in keys if not all(key in done for done in materialised)]


def run_partition(
    job: JobDefinition,
    instance: DagsterInstance,
    stage: Stage,
    partition_key: str | None,
    tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one partition of a stage in process, recording the run in the instance."""
    started = time.perf_counter()
    result = job.execute_in_process(
        run_config=QUIET_CONSOLE,
        instance=instance,
        partition_key=partition_key,
        asset_selection=list(stage.asset_keys),
        tags=dict(tags or {}),
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    if result.success:
        return RunOutcome(partition_key, True, seconds)
    errors = [event.step_failure_data.error.message.strip() for event in result.get_step_failure_events()]
    return RunOutcome(partition_key, False, seconds, "; ".join(errors) or "run failed")


def materialise_stage(
    defs: Definitions,
    instance: DagsterInstance,
    stage: Stage,
    partition_keys: Iterable[str | None],
    on_outcome: Callable[[RunOutcome], None] = lambda outcome: None,
) -> StageReport:
    job = defs.resolve_job_def(stage.job_name)
    report = StageReport(stage)
    for key in missing_partitions(instance, stage, partition_keys):
        outcome = run_partition(job, instance, stage, key)
        report.outcomes.append(outcome)
        on_outcome(outcome)
    return report
