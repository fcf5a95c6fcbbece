"""The demo: the embedded demo region, catalogued, discovered by the sensor, materialised on a persistent
instance at ``$DARTS_HOME/dagster`` so the UI shows every run, partition and lineage edge afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, RunRequest, build_sensor_context

from darts_assets.definitions import defs
from darts_assets.materialise import RunOutcome, Stage, StageReport, materialise_stage, plan_stages, run_partition
from darts_assets.pools import release_slots_of_dead_runs
from darts_assets.sensors import planet_scene_sensor
from darts_core.demo_region import DemoRegion, DemoRegionConfig, load_demo_region, synthesise_demo_region
from darts_core.planet_catalogue import RegistrationReport, register_scene_folders
from partitions import SCENE_PARTITIONS_NAME, year_partitions, years_of_scenes
from resources.stac import default_catalogue_path

DEMO_REGION_FOLDER = "demo_region"
INSTANCE_FOLDER = "dagster"
INSTANCE_CONFIG = """\
# Dagster instance of DARTS (local: SQLite storage under this folder).
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  pools:
    default_limit: 1  # gpu: one model at a time on the device; duckdb: one writer (deploy/dagster.local.yaml)
"""


def ensure_demo_region(home: Path, seed: int | None = None, rebuild: bool = False) -> DemoRegion:
    """The demo region under ``home``: synthesised once (deterministically), reused afterwards."""
    root = home / DEMO_REGION_FOLDER
    if not rebuild and seed is None:
        try:
            return load_demo_region(root)
        except FileNotFoundError:
            pass
    config = DemoRegionConfig() if seed is None else DemoRegionConfig(seed=seed)
    return synthesise_demo_region(root, config)


def catalogue_path() -> Path:
    return Path(default_catalogue_path())


def register_demo_scenes(region: DemoRegion) -> RegistrationReport:
    return register_scene_folders([scene.folder for scene in region.scenes], catalogue_path())


def prepare_instance_home(home: Path) -> Path:
    """The persistent Dagster instance folder, with its ``dagster.yaml``."""
    instance_home = home / INSTANCE_FOLDER
    instance_home.mkdir(parents=True, exist_ok=True)
    config = instance_home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)
    return instance_home


def demo_instance(home: Path) -> DagsterInstance:
    """The demo's instance; pool slots still held by runs whose process died (e.g. killed) are given back."""
    instance = DagsterInstance.from_config(str(prepare_instance_home(home)))
    release_slots_of_dead_runs(instance)
    return instance


@dataclass
class SensorTicks:
    run_requests: list[RunRequest]
    cursor: str | None


def tick_scene_sensor(instance: DagsterInstance, max_ticks: int = 100) -> SensorTicks:
    """Evaluate the scene sensor as the daemon would, tick after tick until it finds nothing new."""
    requests: list[RunRequest] = []
    cursor = None
    for _ in range(max_ticks):
        with build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=defs,
            sensor_name=planet_scene_sensor.name,
            resources=defs.resources,
        ) as context:
            result = planet_scene_sensor(context)
        cursor = getattr(result, "cursor", cursor)
        new_requests = list(getattr(result, "run_requests", None) or [])
        for partitions_request in getattr(result, "dynamic_partitions_requests", None) or []:
            instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, list(partitions_request.partition_keys))
        if not new_requests:
            break
        requests.extend(new_requests)
    return SensorTicks(requests, cursor)


def materialise_graph(
    instance: DagsterInstance,
    sensor_requests: list[RunRequest],
    on_outcome: Callable[[RunOutcome], None] = lambda outcome: None,
    on_stage: Callable[[Stage], None] = lambda stage: None,
) -> list[StageReport]:
    """Run the sensor's requests as sensor runs, then fill every partition still missing, stage by stage."""
    reports = []
    pending_requests = list(sensor_requests)  # they run the first scene stage, as sensor runs
    for stage in plan_stages(defs):
        on_stage(stage)
        report = StageReport(stage)
        if pending_requests and stage.job_name == planet_scene_sensor.job_name:
            job = defs.resolve_job_def(stage.job_name)
            for request in pending_requests:
                tags = {**request.tags, "dagster/sensor_name": planet_scene_sensor.name}
                if request.run_key:
                    tags["dagster/run_key"] = request.run_key
                report.outcomes.append(run_partition(job, instance, stage, request.partition_key, tags))
                on_outcome(report.outcomes[-1])
            pending_requests = []
        attempted = {outcome.partition_key for outcome in report.outcomes}
        keys = [key for key in partition_keys(instance, stage) if key not in attempted]
        report.outcomes += materialise_stage(defs, instance, stage, keys, on_outcome).outcomes
        reports.append(report)
    return reports


def partition_keys(instance: DagsterInstance, stage) -> list[str | None]:
    """The stage's partitions to fill: all of them, except years without any catalogued scene."""
    if stage.partitions_def is None:
        return [None]
    if stage.partitions_def == year_partitions:
        return years_of_scenes(instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME))
    return list(stage.partitions_def.get_partition_keys(dynamic_partitions_store=instance))


def summarise(home: Path, instance: DagsterInstance) -> dict[str, str]:
    """A few lines for the end of the demo: what exists and where."""
    scenes = instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME)
    summary = {"scenes catalogued": f"{len(scenes)} ({catalogue_path()})"}
    for stage in plan_stages(defs):
        for key in stage.asset_keys:
            if stage.partitions_def is None:
                done = "yes" if instance.get_latest_materialization_event(key) else "no"
            else:
                total = len(partition_keys(instance, stage))
                done = f"{len(instance.get_materialized_partitions(key))}/{total} partitions"
            summary[key.to_user_string()] = done
    summary["outputs"] = str(home)
    summary["Dagster instance"] = str(home / INSTANCE_FOLDER)
    return summary
