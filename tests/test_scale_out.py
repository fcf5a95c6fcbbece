"""Scale-out: instance configs (local, cluster), GPU placement for Kubernetes, pools under the multiprocess
executor with scenes in parallel, and batched runs (several scenes per run) of the per-scene chain.

What needs a cluster (K8sRunLauncher, step pods, GPU nodes) cannot run here: the cluster instance is
instantiated on a real PostgreSQL server and a GCS emulator, the run launcher's configuration is checked
against its schema, and the GPU step's Kubernetes Job is built offline as dagster-k8s would build it.
"""

import importlib
import json
import math
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    QueuedRunCoordinator,
    asset,
    instance_for_test,
    materialize,
)
from dagster._config import process_config
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.api import create_execution_plan
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster_gcp.gcs.compute_log_manager import GCSComputeLogManager
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from gcp_storage_emulator.server import create_server
from google.cloud import storage

from darts_assets.batching import SCENE_BACKFILL_POLICY, SCENES_PER_RUN
from darts_assets.cluster import defs as cluster_defs
from darts_assets.definitions import defs as local_defs
from darts_assets.demo import INSTANCE_CONFIG
from darts_assets.jobs import SCENE_ASSETS
from darts_assets.placement import GPU_NODE_SELECTOR
from darts_assets.pools import release_slots_of_dead_runs
from darts_assets.scenes import planet_scene_item
from darts_core.atomic import write_bytes_atomic
from darts_core.demo_region import synthesise_demo_region
from darts_core.planet_catalogue import register_scene_folders
from partitions import SCENE_PARTITIONS_NAME
from resources.stac import StacCatalogue, free_loopback_port
from resources.storage import StorageRoot
from tests.checkpoints import save_untrained_checkpoints

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCENES = ("20230718_193502_88_24b5", "20220712_194511_03_2447")
GPU_ASSETS = ("probability_tcvis", "probability_notcvis")
STEP_END_EVENTS = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
LAUNCH_TAG = "darts/test_launch"
# Step processes fork from a server that imported the code location once (torch, smp: ~15 s of imports).
FORKSERVER = {"forkserver": {"preload_modules": ["darts_assets.definitions"]}}


@dataclass(frozen=True)
class ScaleHome:
    root: Path
    catalogue: Path
    aux: Path
    instance_home: Path

    def storage_root(self, name: str) -> Path:
        """A storage root with its own untrained checkpoints (same weights in every root)."""
        root = self.root / name
        if not (root / "models").exists():
            save_untrained_checkpoints(root / "models")
        return root

    def run_config(self, storage_root: Path) -> dict:
        """Every resource location explicit (step processes share nothing with this one but the config)."""
        return {
            "execution": {"config": {"multiprocess": {"max_concurrent": 4, "start_method": FORKSERVER}}},
            "resources": {
                "storage": {"config": {"root": str(storage_root)}},
                "stac_catalogue": {"config": {"catalogue_path": str(self.catalogue), "api_url": ""}},
                "aux_layers": {
                    "config": {
                        "dem_path": str(self.aux / "arcticdem_mosaic.vrt"),
                        "tcvis_path": str(self.aux / "tcvis.tif"),
                        "landcover_path": str(self.aux / "landcover.tif"),
                    }
                },
                "gpu": {"config": {"device": "cpu"}},
            },
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        }


@pytest.fixture(scope="module")
def scale_home(tmp_path_factory) -> ScaleHome:
    """Two demo scenes catalogued, and a local instance configured as deploy/dagster.local.yaml."""
    root = tmp_path_factory.mktemp("scale_out")
    region = synthesise_demo_region(root / "demo_region")
    catalogue = root / "catalogue" / "planet_scenes.parquet"
    register_scene_folders([scene.folder for scene in region.scenes if scene.item_id in SCENES], catalogue)
    instance_home = root / "dagster"
    instance_home.mkdir()
    (instance_home / "dagster.yaml").write_text((DEPLOY / "dagster.local.yaml").read_text())
    with DagsterInstance.from_config(str(instance_home)) as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, list(SCENES))
    return ScaleHome(root, catalogue, root / "demo_region" / "aux", instance_home)


def launch_scene_run(home: ScaleHome, storage_root: Path, tags: dict[str, str], log: Path) -> subprocess.Popen:
    """``dagster job execute`` of the scene job in a process of its own, on the instance of ``home``.

    (Concurrent runs need processes: Dagster reconfigures Python logging when a run starts, which can deadlock
    against another run's logging in the same process.)
    """
    config = log.with_suffix(".yaml")
    config.write_text(yaml.safe_dump(home.run_config(storage_root)))
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "darts_assets.definitions", "-a", "defs"]
    command += ["-j", "scene_job", "-c", str(config), "--tags", json.dumps(tags)]
    environment = {**os.environ, "DAGSTER_HOME": str(home.instance_home)}
    with log.open("w") as output:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT)


@dataclass(frozen=True)
class ConcurrentRuns:
    single_run_id: str  # of the last scene of the batch: the one that gets its models from the cache
    batched_run_id: str
    single_root: Path
    batched_root: Path

    @property
    def run_ids(self) -> list[str]:
        return [self.single_run_id, self.batched_run_id]


@pytest.fixture(scope="module")
def concurrent_runs(scale_home) -> ConcurrentRuns:
    """At once: a batched run of all scenes and a run of its last scene alone; every step in its own process."""
    single_root, batched_root = scale_home.storage_root("single"), scale_home.storage_root("batched")
    batch = {ASSET_PARTITION_RANGE_START_TAG: SCENES[0], ASSET_PARTITION_RANGE_END_TAG: SCENES[-1]}
    launches = {"single": (single_root, {PARTITION_NAME_TAG: SCENES[-1]}), "batch": (batched_root, batch)}
    processes = {}
    for label, (root, tags) in launches.items():
        log = scale_home.root / f"run_{label}.log"
        processes[label] = (launch_scene_run(scale_home, root, {**tags, LAUNCH_TAG: label}, log), log)
    for process, log in processes.values():
        assert process.wait(timeout=1800) == 0, log.read_text()[-3000:]
    with DagsterInstance.from_config(str(scale_home.instance_home)) as instance:
        run_ids = {run.tags[LAUNCH_TAG]: run.run_id for run in instance.get_runs() if LAUNCH_TAG in run.tags}
    return ConcurrentRuns(run_ids["single"], run_ids["batch"], single_root, batched_root)


def step_intervals(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) of every step of the run that started, from the event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, *STEP_END_EVENTS}):
        if entry.dagster_event_type == DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        else:
            ends[entry.step_key] = entry.timestamp
    return {step: (starts[step], ends[step]) for step in starts}


def run_seconds(instance: DagsterInstance, run_id: str) -> float:
    """From the run's first step start to its last step end (without process start-up)."""
    intervals = step_intervals(instance, run_id).values()
    return max(end for _, end in intervals) - min(start for start, _ in intervals)


def peak_concurrency(intervals: list[tuple[str, float, float]]) -> int:
    """The most steps running at the same moment."""
    changes = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals])
    running, peak = 0, 0
    for _, change in changes:
        running += change
        peak = max(peak, running)
    return peak


def overlapping_pairs(intervals: list[tuple[str, float, float]]) -> list[tuple[str, str]]:
    ordered = sorted(intervals, key=lambda interval: interval[1])
    return [
        (first[0], second[0])
        for index, first in enumerate(ordered)
        for second in ordered[index + 1 :]
        if second[1] < first[2]
    ]


def test_concurrent_runs_respect_the_gpu_pool(scale_home, concurrent_runs):
    with DagsterInstance.from_config(str(scale_home.instance_home)) as instance:
        runs = [instance.get_run_by_id(run_id) for run_id in concurrent_runs.run_ids]
        assert all(run.is_success for run in runs), [run.status for run in runs]
        intervals = [
            (f"{run_id[:8]}:{step}", start, end)
            for run_id in concurrent_runs.run_ids
            for step, (start, end) in step_intervals(instance, run_id).items()
        ]
        blocked = [
            entry
            for run_id in concurrent_runs.run_ids
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if "blocked by limit for pool gpu" in entry.message
        ]
        model_at_work = [
            (f"{run_id[:8]}:{asset}:{scene_id}", *metadata["run"].value["device_interval"])
            for run_id in concurrent_runs.run_ids
            for asset, per_scene in metadata_by_asset_and_scene(instance, run_id).items()
            if asset in GPU_ASSETS
            for scene_id, metadata in per_scene.items()
        ]
    gpu_steps = [interval for interval in intervals if interval[0].split(":")[1] in GPU_ASSETS]
    other_steps = [interval for interval in intervals if interval[0].split(":")[1] not in GPU_ASSETS]
    assert len(gpu_steps) == len(GPU_ASSETS) * len(concurrent_runs.run_ids)
    # Never two models on the device at once. The pool alone does not guarantee it on SQLite: two steps claiming
    # the last slot at the same moment can both get it (seen here), so TorchDevice.exclusive() also holds a lock.
    assert len(model_at_work) == len(GPU_ASSETS) * (len(SCENES) + 1)
    assert overlapping_pairs(model_at_work) == []
    assert blocked, "no gpu step ever waited: the pool limit was not exercised"
    assert overlapping_pairs(other_steps), "no two steps ran at the same time: nothing ran in parallel"
    print(f"\n{len(intervals)} steps of {len(runs)} runs, at most {peak_concurrency(intervals)} at once")


def test_batched_run_matches_single_scene_runs_and_loads_each_model_once(scale_home, concurrent_runs):
    with DagsterInstance.from_config(str(scale_home.instance_home)) as instance:
        assert instance.get_run_by_id(concurrent_runs.batched_run_id).is_success
        batched = metadata_by_asset_and_scene(instance, concurrent_runs.batched_run_id)
        single = metadata_by_asset_and_scene(instance, concurrent_runs.single_run_id)
        seconds = {run_id: run_seconds(instance, run_id) for run_id in concurrent_runs.run_ids}
    assert set(batched) == {key.to_user_string() for asset in SCENE_ASSETS for key in asset.keys}
    for asset_name, per_scene in batched.items():
        assert set(per_scene) == set(SCENES), asset_name
        assert set(per_scene[SCENES[-1]]) == set(single[asset_name][SCENES[-1]]), asset_name  # same fields
    for scene_id in SCENES:  # each scene's materialisation carries that scene's own metadata
        assert scene_id in batched["input_stack"][scene_id]["path"].value
        assert scene_id in batched["probability_tcvis"][scene_id]["path"].value
    for asset_name in GPU_ASSETS:
        loaded = [batched[asset_name][scene_id]["model_loaded"].value for scene_id in SCENES]
        assert loaded == [True] + [False] * (len(SCENES) - 1), (asset_name, loaded)
    assert_same_outputs(concurrent_runs.single_root, concurrent_runs.batched_root, SCENES[-1])
    print(
        f"\nfirst step to last: single-scene run {seconds[concurrent_runs.single_run_id]:.0f} s, "
        f"batched run of {len(SCENES)} scenes {seconds[concurrent_runs.batched_run_id]:.0f} s"
    )


def metadata_by_asset_and_scene(instance: DagsterInstance, run_id: str) -> dict[str, dict[str, dict]]:
    """asset -> scene -> metadata of the run's materialisations."""
    found: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialisation = entry.asset_materialization
        found[materialisation.asset_key.to_user_string()][materialisation.partition] = materialisation.metadata
    return found


def assert_same_outputs(single_root: Path, batched_root: Path, scene_id: str) -> None:
    for name in ("probability_tcvis.tif", "probability_notcvis.tif", "probability_ensemble.tif", "cleaned_mask.tif"):
        with rasterio.open(single_root / "scenes" / scene_id / name) as single:
            with rasterio.open(batched_root / "scenes" / scene_id / name) as batched:
                np.testing.assert_array_equal(single.read(), batched.read(), err_msg=f"{scene_id} {name}")
    year = f"year={scene_id[:4]}"
    single_features = gpd.read_parquet(single_root / "level1" / year / f"{scene_id}.parquet")
    batched_features = gpd.read_parquet(batched_root / "level1" / year / f"{scene_id}.parquet")
    assert single_features.drop(columns="geometry").equals(batched_features.drop(columns="geometry"))
    assert single_features.geometry.geom_equals(batched_features.geometry).all()


def test_a_bad_scene_fails_its_batch_naming_it(scale_home, tmp_path):
    missing = "20210101_000000_00_0000"
    tags = {ASSET_PARTITION_RANGE_START_TAG: SCENES[0], ASSET_PARTITION_RANGE_END_TAG: missing}
    resources = {
        "stac_catalogue": StacCatalogue(catalogue_path=str(scale_home.catalogue)),
        "storage": StorageRoot(root=str(tmp_path)),
    }
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, [SCENES[0], missing])
        result = materialize(
            [planet_scene_item], instance=instance, resources=resources, tags=tags, raise_on_error=False
        )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "1 of 2 scenes failed: scene " in message and "not found in the scene catalogue" in message
    assert missing in message and SCENES[0] not in message
    assert (tmp_path / "scenes" / SCENES[0] / "item.json").exists()  # the good scene was done, not recorded
    assert result.get_asset_materialization_events() == []


def test_a_backfill_runs_the_scene_chain_in_batches():
    """The runs the backfill daemon would launch (Dagster's own planner): whole chains, SCENES_PER_RUN each."""
    scene_ids = [f"20230801_0000{index:02d}_00_0000" for index in range(SCENES_PER_RUN + 1)]
    chain = [key for asset in SCENE_ASSETS for key in asset.keys]
    graph = local_defs.resolve_asset_graph()
    assert {graph.get(key).backfill_policy for key in chain} == {SCENE_BACKFILL_POLICY}
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, scene_ids)
        with partition_loading_context(dynamic_partitions_store=instance):
            requests = build_run_requests_with_backfill_policies(
                [AssetKeyPartitionKey(key, scene_id) for key in chain for scene_id in scene_ids],
                graph,
                instance,
            )
    assert len(requests) == math.ceil(len(scene_ids) / SCENES_PER_RUN) == 2
    ranges = [
        (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG])
        for request in requests
    ]
    assert sorted(ranges) == [(scene_ids[0], scene_ids[SCENES_PER_RUN - 1]), (scene_ids[-1], scene_ids[-1])]
    assert all(set(request.asset_selection) == set(chain) for request in requests)


def test_local_instance_config_is_the_demo_one_and_limits_both_pools(tmp_path):
    assert yaml.safe_load((DEPLOY / "dagster.local.yaml").read_text()) == yaml.safe_load(INSTANCE_CONFIG)
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.local.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
        limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    assert limits == {"gpu": 1}


def cluster_environment(postgres: dict[str, str] | None = None) -> dict[str, str]:
    """What Kubernetes would put in the environment of the cluster's Dagster pods."""
    return {
        "DAGSTER_PG_HOST": "postgres.example.internal",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_USERNAME": "dagster",
        "DAGSTER_PG_PASSWORD": "from-a-secret",
        "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
        "DAGSTER_K8S_NAMESPACE": "darts",
        "DAGSTER_K8S_SERVICE_ACCOUNT": "dagster",
        "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
        "DARTS_COMPUTE_LOG_BUCKET": "darts-logs",
        **(postgres or {}),
    }


def cluster_instance_config() -> dict:
    config, _ = dagster_instance_config(str(DEPLOY), "dagster.cluster.yaml")
    return config


def configured_class_config(section: dict) -> dict:
    """The section's config as its class would receive it (schema checked, env vars resolved)."""
    klass = getattr(importlib.import_module(section["module"]), section["class"])
    result = process_config(klass.config_type(), section.get("config") or {})
    assert result.success, [error.message for error in result.errors]
    return result.value


def test_cluster_instance_config_matches_dagster_schemas(monkeypatch):
    for name, value in cluster_environment().items():
        monkeypatch.setenv(name, value)
    config = cluster_instance_config()  # the whole file against the instance schema
    launcher = configured_class_config(config["run_launcher"])
    assert launcher["job_namespace"] == "darts" and launcher["instance_config_map"] == "dagster-instance"
    assert launcher["env_secrets"] == ["darts-credentials"]  # credentials reach pods as env vars from a secret
    assert configured_class_config(config["compute_logs"])["bucket"] == "darts-logs"
    assert configured_class_config(config["run_coordinator"])["max_user_code_failure_retries"] == 3
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    text = (DEPLOY / "dagster.cluster.yaml").read_text()
    assert "from-a-secret" not in text and "password: {env: DAGSTER_PG_PASSWORD}" in text


def test_gpu_steps_get_a_gpu_node_and_limit_from_the_k8s_executor():
    """The scene job's step pods on the cluster, built as dagster-k8s builds them (no cluster needed)."""
    assert local_defs.resolve_job_def("scene_job").executor_def.name == "multi_or_in_process_executor"
    job = cluster_defs.resolve_job_def("scene_job")
    executor_config = job.executor_def.config_schema.resolve_config({})  # what k8s_job_executor receives
    assert executor_config.success, [error.message for error in executor_config.errors]
    plan = create_execution_plan(job)
    pods = {step.key: step_pod(executor_config.value["config"], step.tags) for step in plan.steps}
    for step_key, pod in pods.items():
        limits = pod.containers[0].resources.limits or {}
        if step_key in GPU_ASSETS:
            assert pod.node_selector == GPU_NODE_SELECTOR
            assert limits["nvidia.com/gpu"] == "1"
            assert any(toleration.key == "nvidia.com/gpu" for toleration in pod.tolerations)
        else:
            assert pod.node_selector is None and "nvidia.com/gpu" not in limits, step_key
            assert pod.containers[0].resources.requests["cpu"], step_key  # the executor's step size
    assert set(GPU_ASSETS) <= set(pods)


def step_pod(executor_config: dict, step_tags: dict[str, str]):
    """The pod spec of a step's Kubernetes Job: executor step config, then the step's op tags on top."""
    executor_context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config.get("step_k8s_config", {}))
    )
    context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    job_config = DagsterK8sJobConfig(
        job_image="registry.example/darts:test", dagster_home="/opt/dagster/dagster_home", instance_config_map="i"
    )
    k8s_job = construct_dagster_k8s_job(
        job_config,
        ["dagster", "api", "execute_step"],
        "dagster-step-x",
        context.run_k8s_config,
        component="step_worker",
    )
    return k8s_job.spec.template.spec


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL server on loopback with password auth; its connection as the cluster's env vars."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="darts_postgres_"))
    run_as = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = ["runuser", "-u", "nobody", "--"]
        os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
    password = "a-test-password"
    (folder / "password").write_text(password)
    port = free_loopback_port()
    data = str(folder / "data")
    options = f"-h 127.0.0.1 -p {port} -k {folder}"
    try:
        subprocess.run(
            [
                *run_as,
                initdb,
                "-D",
                data,
                "-U",
                "dagster",
                "--pwfile",
                str(folder / "password"),
                "--auth=scram-sha-256",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-o", options, "-l", str(folder / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_DB": "postgres",
            "DAGSTER_PG_USERNAME": "dagster",
            "DAGSTER_PG_PASSWORD": password,
        }
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def gcs_bucket(monkeypatch) -> Iterator[str]:
    """A bucket in a local GCS emulator, which google-cloud-storage clients then talk to."""
    port = free_loopback_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="darts-logs")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield "darts-logs"
    finally:
        server.stop()


@asset(pool="duckdb")
def pool_probe() -> MaterializeResult:
    """A step in the duckdb pool that prints a line for the compute logs."""
    print("pool probe ran")
    return MaterializeResult(metadata={"pool": "duckdb"})


def test_cluster_instance_on_postgres_with_compute_logs_in_gcs(postgres_server, gcs_bucket, tmp_path, monkeypatch):
    """The cluster's dagster.yaml as it is, on a real PostgreSQL server; only the run launcher needs a cluster."""
    for name, value in cluster_environment(postgres_server).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.cluster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.compute_log_manager, GCSComputeLogManager)
        instance.event_log_storage.set_concurrency_slots("gpu", 4)  # `dagster instance concurrency set gpu 4`
        result = materialize([pool_probe], instance=instance)
        limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    assert result.success
    assert limits == {"gpu": 4, "duckdb": 1}  # duckdb: the default limit, set when its first step ran
    logs = [blob.name for blob in storage.Client().bucket(gcs_bucket).list_blobs(prefix="dagster/compute-logs/")]
    assert any(result.run_id in name for name in logs), logs


def test_helm_values_and_image_serve_the_cluster_code_location():
    """The chart values, the image and dagster.cluster.yaml name the same module, secrets, settings and driver."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    cluster = yaml.safe_load((DEPLOY / "dagster.cluster.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    module = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--module-name") + 1]
    assert importlib.import_module(module).defs is cluster_defs
    assert f'"--module-name", "{module}"' in (DEPLOY / "Dockerfile").read_text()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert [secret["name"] for secret in launcher["envSecrets"]] == cluster["run_launcher"]["config"]["env_secrets"]
    assert [name["name"] for name in launcher["envConfigMaps"]] == cluster["run_launcher"]["config"]["env_config_maps"]
    assert values["postgresql"]["postgresqlScheme"] == cluster["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["computeLogManager"]["type"] == cluster["compute_logs"]["class"]


SLOT_HOLDER = """
import sys, time
from dagster import DagsterInstance, asset, materialize

@asset(pool="gpu")
def holds_the_gpu_slot():
    print("holding", flush=True)
    time.sleep(600)

materialize([holds_the_gpu_slot], instance=DagsterInstance.from_config(sys.argv[1]))
"""


def test_a_killed_run_gives_its_pool_slot_back(tmp_path):
    """A run killed hard keeps its gpu slot (the next run would wait forever) until the demo gives it back."""
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.local.yaml").read_text())
    (tmp_path / "holder.py").write_text(SLOT_HOLDER)
    command = [sys.executable, str(tmp_path / "holder.py"), str(tmp_path)]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert any("holding" in line for line in holder.stdout)
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            assert release_slots_of_dead_runs(instance) == []  # its process is alive: the slot stays
            assert len(instance.event_log_storage.get_concurrency_info("gpu").claimed_slots) == 1
    finally:
        holder.kill()
        holder.wait()
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED
        assert len(instance.event_log_storage.get_concurrency_info("gpu").claimed_slots) == 1
        assert release_slots_of_dead_runs(instance) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []


def test_parallel_steps_write_atomically_into_one_scene_folder(tmp_path):
    """Steps running at once write into the same scene folder, sharing its .partial/ staging folder."""
    errors: list[BaseException] = []

    def write_many(name: str) -> None:
        try:
            for _ in range(1500):
                write_bytes_atomic(tmp_path / name, b"raster")
        except OSError as error:
            errors.append(error)

    writers = [threading.Thread(target=write_many, args=(f"layer_{index}.tif",)) for index in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"layer_{index}.tif" for index in range(4)]
