"""The storage root on ``gs://bucket/prefix``: a GCS emulator on loopback (gcp-storage-emulator), gcsfs and DuckDB.

The emulator runs in a subprocess started here; ``STORAGE_EMULATOR_HOST`` is the only setting the storage root,
DuckDB and dagster-gcp (``GCSResource``, ``GCSComputeLogManager``) get. One demo scene goes through the per-scene
chain, small checkpoints are trained, then the year assets, the product files and the SQL models run: every output
must be in the bucket, none in the local fallback root, and the fake credential in the environment nowhere in
the runs' event logs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gcsfs.core
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    MaterializeResult,
    asset,
    instance_for_test,
    materialize,
)
from dagster._serdes import serialize_value
from dagster_gcp import GCSResource
from google.cloud import storage as gcs

from darts_assets.annual import ANNUAL_ASSETS
from darts_assets.jobs import SCENE_ASSETS
from darts_assets.predictions import PREDICTION_ASSETS
from darts_assets.products import PRODUCT_FILE_ASSETS
from darts_assets.scene_inputs import SCENE_INPUT_ASSETS, SCENES_FOLDER
from darts_assets.scenes import planet_scene_item
from darts_assets.sql_models import SQL_MODEL_ASSETS
from darts_assets.training import MODELS_FOLDER, TRAINING_FOLDER, model_checkpoint
from darts_core.demo_region import synthesise_demo_region
from darts_core.level1 import LEVEL1_COLUMNS
from darts_core.params import TrainingParams
from darts_core.planet_catalogue import register_scene_folders
from darts_core.training_data import PatchSet, read_labels, save_patchset, scene_patches
from partitions import MODEL_VARIANTS, SCENE_PARTITIONS_NAME
from resources.aux_sources import LocalMosaicSource
from resources.duckdb import DartsDuckDB
from resources.gpu import TorchDevice
from resources.stac import StacCatalogue
from resources.storage import EMULATOR_HOST_ENV, StorageRoot
from resources.training import TrainingSetup

BUCKET = "darts-test"
PREFIX = "darts"
ROOT = f"gs://{BUCKET}/{PREFIX}"
SCENE = "20220729_194513_21_241c"  # a labelled 2022 PSScene of the demo region
YEAR = "2022"
FAKE_SECRET = "fake-refresh-token-5b1e0c9d"  # in the environment's credentials file; must never reach a run's log
TRAIN_PATCHES, VALIDATION_PATCHES = 4, 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(endpoint: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the GCS emulator did not answer on {endpoint} within {timeout_s} s")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Iterator[str]:
    """An in-memory GCS emulator on a free loopback port; its endpoint URL."""
    port = free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"  # clients closing early make it log broken pipes
    process = subprocess.Popen([*command, "--in-memory", "--quiet"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the emulator may not stop on SIGTERM (seen under load): kill it
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def gcs_env(emulator, tmp_path_factory) -> Iterator[Path]:
    """The environment: the emulator, a fake credentials file and a local fallback root (returned) to stay empty."""
    folder = tmp_path_factory.mktemp("gcs_env")
    credentials = folder / "application_default_credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "fake-client.apps.googleusercontent.com",
                "client_secret": "fake-client-secret",
                "refresh_token": FAKE_SECRET,
            }
        )
    )
    fallback = folder / "darts_home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(EMULATOR_HOST_ENV, emulator)
        env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
        env.setenv("DARTS_HOME", str(fallback))
        env.delenv("DARTS_STORAGE_ROOT", raising=False)
        yield fallback


@pytest.fixture(scope="module")
def bucket(gcs_env) -> gcs.Bucket:
    """The test bucket, created through dagster-gcp's GCSResource (a google-cloud-storage client)."""
    return GCSResource(project="darts-test").get_client().create_bucket(BUCKET)


def object_names(bucket: gcs.Bucket, below: str = PREFIX) -> set[str]:
    """Object names below ``below``, listed by google-cloud-storage (independent of gcsfs)."""
    return {blob.name for blob in bucket.client.list_blobs(bucket.name, prefix=f"{below}/")}


def frame(values: list[int], year: int) -> gpd.GeoDataFrame:
    points = [shapely.Point(-135.0 + value / 100, 68.0).buffer(0.001) for value in values]
    return gpd.GeoDataFrame({"value": values, "year": year}, geometry=points, crs="EPSG:4326")


# --- the storage root -----------------------------------------------------------------------------------


def test_storage_round_trips_on_the_emulator(bucket):
    storage = StorageRoot(root=ROOT)
    assert not storage.is_local and str(storage.path("a", "b.txt")) == f"{ROOT}/a/b.txt"
    with storage.atomic_output("unit", "written.bin") as local:
        local.write_bytes(b"payload")
        assert f"{PREFIX}/unit/written.bin" not in object_names(bucket)  # nothing visible before the block ends
    with pytest.raises(RuntimeError), storage.atomic_output("unit", "failed.bin") as local:
        local.write_bytes(b"half")
        raise RuntimeError("writer failed")
    storage.write_bytes(b"second", "unit", "other.bin")
    assert object_names(bucket, f"{PREFIX}/unit") >= {f"{PREFIX}/unit/written.bin", f"{PREFIX}/unit/other.bin"}
    assert f"{PREFIX}/unit/failed.bin" not in object_names(bucket)
    with storage.local_input("unit", "written.bin") as local:
        assert local.read_bytes() == b"payload"
    assert sorted(path.name for path in storage.path("unit").glob("*.bin")) == ["other.bin", "written.bin"]
    with pytest.raises(FileNotFoundError, match="failed.bin"), storage.local_input("unit", "failed.bin"):
        pass


def test_upload_failing_midway_leaves_the_previous_object(bucket, monkeypatch):
    """A resumable upload whose connection drops after its first part: the previous object stays as it was.

    gcsfs then cancels the upload session; the emulator does not implement that (501, retried for ~30 s), GCS does.
    """
    storage = StorageRoot(root=ROOT)
    storage.write_bytes(b"previous version", "unit", "stack.tif")
    real_upload_chunk = gcsfs.core.upload_chunk

    async def drop_after_first_part(fs, location, data, offset, size, content_type):
        part = len(data) // 2 // 2**18 * 2**18  # resumable parts are multiples of 256 KiB
        await real_upload_chunk(fs, location, data[:part], offset, size, content_type)
        raise ConnectionResetError("connection dropped mid-upload")

    monkeypatch.setattr(gcsfs.core, "upload_chunk", drop_after_first_part)
    with pytest.raises(Exception) as failure, storage.atomic_output("unit", "stack.tif") as local:
        local.write_bytes(np.random.default_rng(0).bytes(6 * 2**20))  # above gcsfs's 5 MiB simple-upload limit
    assert isinstance(failure.value, ConnectionResetError) or isinstance(
        failure.value.__context__, ConnectionResetError
    )
    assert bucket.blob(f"{PREFIX}/unit/stack.tif").download_as_bytes() == b"previous version"


def test_cached_input_is_stable_until_the_object_changes(bucket):
    storage = StorageRoot(root=ROOT)
    storage.write_bytes(b"version 1", "cache", "model.pt")
    first = storage.cached_input("cache", "model.pt")
    assert first.read_bytes() == b"version 1" and storage.cached_input("cache", "model.pt") == first
    storage.write_bytes(b"version 2", "cache", "model.pt")
    second = storage.cached_input("cache", "model.pt")
    assert second != first and second.read_bytes() == b"version 2"


def test_duckdb_reads_hive_geoparquet_from_gs(bucket, tmp_path):
    storage = StorageRoot(root=ROOT)
    expected = {2021: frame([1, 2], 2021), 2022: frame([3], 2022)}
    for year, features in expected.items():
        with storage.atomic_output("hive", f"year={year}", "features.parquet") as local:
            features.to_parquet(local, schema_version="1.1.0", write_covering_bbox=True)
    files = sorted(str(path) for path in storage.path("hive").glob("year=*/*.parquet"))
    assert files == [f"{ROOT}/hive/year=2021/features.parquet", f"{ROOT}/hive/year=2022/features.parquet"]
    database = DartsDuckDB(database=str(tmp_path / "darts.duckdb"))
    read = database.read_geoparquet(files).sort_values("value", ignore_index=True)
    assert read["value"].tolist() == [1, 2, 3] and read.crs == "EPSG:4326"
    written = gpd.GeoSeries(pd.concat([features.geometry for features in expected.values()], ignore_index=True))
    assert read.geometry.geom_equals_exact(written, 1e-9).all()
    with database.connect() as con:  # the SQL models' hive sources: one glob bound as a variable
        from darts_assets.sql_models import set_variables

        set_variables(con, {"hive_glob": str(storage.path("hive", "year=*", "*.parquet"))})
        rows = con.sql(
            "SELECT year, count(*) FROM read_parquet(getvariable('hive_glob'), hive_partitioning = true) "
            "GROUP BY year ORDER BY year"
        ).fetchall()
    assert rows == [(2021, 2), (2022, 1)]


def test_compute_logs_go_to_gcs_through_dagster_gcp(bucket, tmp_path):
    """GCSComputeLogManager (the instance's ``compute_logs``) uploads a step's stdout to the emulator's bucket."""

    @asset
    def noisy() -> MaterializeResult:
        print("hello from a DARTS step", flush=True)
        return MaterializeResult()

    compute_logs = {
        "module": "dagster_gcp.gcs.compute_log_manager",
        "class": "GCSComputeLogManager",
        "config": {"bucket": BUCKET, "prefix": "compute-logs", "local_dir": str(tmp_path / "staging")},
    }
    with instance_for_test(overrides={"compute_logs": compute_logs}) as instance:
        assert materialize([noisy], instance=instance).success
    logs = [bucket.blob(name).download_as_text() for name in object_names(bucket, "compute-logs")]
    assert any("hello from a DARTS step" in text for text in logs)


# --- the asset graph ------------------------------------------------------------------------------------


class SmallTraining(TrainingSetup):
    """One epoch over a few 64 px patches: enough to write a real checkpoint quickly."""

    def params(self) -> TrainingParams:
        return TrainingParams(patch_size=64, patch_stride=64, epochs=1, batch_size=TRAIN_PATCHES)


@dataclass
class GraphRun:
    results: list[ExecuteInProcessResult]
    event_log: str  # every run's events and run config, serialised


def write_training_patches(storage: StorageRoot, labels_path: Path, params: TrainingParams) -> None:
    """Patches of the scene's (remote) input stack: a few for training, the next few for validation."""
    with (
        storage.local_input(SCENES_FOLDER, SCENE, "input_stack.tif") as stack,
        storage.local_input(SCENES_FOLDER, SCENE, "valid_mask.tif") as mask,
    ):
        patches = scene_patches(SCENE, stack, mask, read_labels(labels_path), params)
    assert len(patches) >= TRAIN_PATCHES + VALIDATION_PATCHES
    parts = {"train": slice(0, TRAIN_PATCHES), "validation": slice(TRAIN_PATCHES, TRAIN_PATCHES + VALIDATION_PATCHES)}
    for name, part in parts.items():
        subset = PatchSet(patches.inputs[part], patches.targets[part], patches.scene_ids[part], patches.bands)
        with storage.atomic_output(TRAINING_FOLDER, f"{name}.npz") as local:
            save_patchset(local, subset)


def serialised_event_log(instance: DagsterInstance, results: list[ExecuteInProcessResult]) -> str:
    parts = []
    for result in results:
        parts.append(serialize_value(instance.get_run_by_id(result.run_id).run_config))
        parts.extend(serialize_value(entry) for entry in instance.all_logs(result.run_id))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def graph_run(gcs_env, bucket, tmp_path_factory) -> GraphRun:
    """Scene chain (inputs, small checkpoints, predictions), year assets, products and SQL models on gs://."""
    work = tmp_path_factory.mktemp("gs_graph")
    region = synthesise_demo_region(work / "demo_region")
    register_scene_folders([scene.folder for scene in region.scenes if scene.item_id == SCENE], work / "cat.parquet")
    storage = StorageRoot(root=ROOT)
    training = SmallTraining(labels_path=str(region.training_labels))
    resources = {
        "storage": storage,
        "stac_catalogue": StacCatalogue(catalogue_path=str(work / "cat.parquet")),
        "aux_layers": LocalMosaicSource(
            dem_path=str(region.dem_vrt), tcvis_path=str(region.tcvis), landcover_path=str(region.landcover)
        ),
        "gpu": TorchDevice(device="cpu"),
        "training": training,
        "duckdb": DartsDuckDB(database=str(work / "database" / "darts.duckdb")),
    }
    everything = [*SCENE_ASSETS, model_checkpoint, *ANNUAL_ASSETS, *PRODUCT_FILE_ASSETS, *SQL_MODEL_ASSETS]
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, [SCENE])

        def run(selection: list, partition_key: str | None = None) -> None:
            result = materialize(
                everything, selection=selection, partition_key=partition_key, instance=instance, resources=resources
            )
            assert result.success
            results.append(result)

        results: list[ExecuteInProcessResult] = []
        run([planet_scene_item, *SCENE_INPUT_ASSETS], SCENE)
        write_training_patches(storage, region.training_labels, training.params())
        for variant in MODEL_VARIANTS:
            run([model_checkpoint], variant)
        run(PREDICTION_ASSETS, SCENE)
        run(ANNUAL_ASSETS, YEAR)
        run([*PRODUCT_FILE_ASSETS, *SQL_MODEL_ASSETS])
        return GraphRun(results, serialised_event_log(instance, results))


def test_scene_chain_writes_every_output_to_the_bucket(graph_run, bucket, gcs_env):
    names = object_names(bucket)
    scene = f"{PREFIX}/{SCENES_FOLDER}/{SCENE}"
    expected = [
        f"{scene}/item.json",
        f"{scene}/quicklook.png",
        f"{scene}/valid_mask.tif",
        f"{scene}/input_stack.tif",
        f"{scene}/cleaned_mask.tif",
        *(f"{scene}/probability_{variant}.tif" for variant in (*MODEL_VARIANTS, "ensemble")),
        *(f"{PREFIX}/{MODELS_FOLDER}/{variant}.pt" for variant in MODEL_VARIANTS),
        f"{PREFIX}/footprints/year={YEAR}/{SCENE}.parquet",
        f"{PREFIX}/level1/year={YEAR}/{SCENE}.parquet",
        f"{PREFIX}/level2/year={YEAR}/level2_features.parquet",
        f"{PREFIX}/coverage/level1/year={YEAR}/coverage_level1.parquet",
        f"{PREFIX}/coverage/level2/year={YEAR}/coverage_level2.parquet",
    ]
    assert [name for name in expected if name not in names] == []
    products = {name.removeprefix(f"{PREFIX}/products/") for name in names if "/products/" in name}
    assert {name.rsplit(".", 1)[1] for name in products} == {"parquet", "gpkg"} and len(products) == 12
    assert not any(".partial" in name for name in names)
    assert not gcs_env.exists() or list(gcs_env.rglob("*")) == []  # nothing fell back to the local root


def materialization(graph_run: GraphRun, name: str):
    """The (one) materialisation of asset ``name`` in the graph's runs."""
    found = [event for result in graph_run.results for event in result.asset_materializations_for_node(name)]
    assert len(found) == 1, name
    return found[0]


def test_outputs_read_back_from_the_bucket(graph_run):
    storage = StorageRoot(root=ROOT)
    with storage.local_input(SCENES_FOLDER, SCENE, "probability_ensemble.tif") as path, rasterio.open(path) as src:
        assert src.dtypes[0] == "uint8" and len(json.loads(src.tags()["members"])) == len(MODEL_VARIANTS)
    checkpoint = f"{ROOT}/{MODELS_FOLDER}/tcvis.pt"
    assert materialization(graph_run, "probability_tcvis").metadata["run"].value["checkpoint"] == checkpoint
    assert materialization(graph_run, "probability_tcvis").metadata["run"].value["model"] == "tcvis_demo"
    level1 = DartsDuckDB().read_geoparquet(str(storage.path("level1", f"year={YEAR}", f"{SCENE}.parquet")))
    assert tuple(level1.columns) == LEVEL1_COLUMNS
    assert materialization(graph_run, "annual_level2").metadata["level1_features"].value == len(level1)
    assert materialization(graph_run, "level1_product").metadata["path"].value.startswith(f"{ROOT}/products/")
    assert materialization(graph_run, "level1_features").metadata["dagster/row_count"].value == len(level1)
    coverage = materialization(graph_run, "coverage_level1").metadata["dagster/row_count"].value
    assert coverage == 1  # the one scene's footprint, read by the SQL model from the product file on gs://


def test_no_credential_in_the_event_log(graph_run, gcs_env):
    assert f"{ROOT}/{MODELS_FOLDER}/tcvis.pt" in graph_run.event_log  # the log holds the materialisations' metadata
    assert FAKE_SECRET not in graph_run.event_log
    assert "application_default_credentials" not in graph_run.event_log
