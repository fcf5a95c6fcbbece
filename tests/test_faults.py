"""Faults and bad input, one test per row of the README's "Faults and bad input" table.

Graph-level cases run three demo scenes through the stage materialiser (one run per scene partition, as the
sensor and ``darts demo`` do) with one scene broken, and check that the broken one fails with its id and file in
the message while every other scene's assets are materialised.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import geopandas as gpd
import pytest
import rasterio
import requests
import rustac
from dagster import (
    AssetsDefinition,
    DagsterEventType,
    Definitions,
    define_asset_job,
    instance_for_test,
    materialize,
)
from dagster._grpc.client import DEFAULT_SENSOR_GRPC_TIMEOUT
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

import darts_assets.sensors as sensors
import darts_assets.sql_models as sql_models
from darts_assets.materialise import RunOutcome, materialise_stage, plan_stages
from darts_assets.scene_inputs import FOOTPRINTS_FOLDER, planet_scene, scene_terrain
from darts_assets.scenes import SCENES_FOLDER, planet_scene_item
from darts_assets.sql_models import sql_model_assets
from darts_core.atomic import PARTIAL_FOLDER
from darts_core.demo_region import DemoRegion, synthesise_demo_region
from darts_core.planet_catalogue import find_planet_assets, read_catalogue, register_scene_folders, scene_item
from partitions import SCENE_PARTITIONS_NAME, scene_partitions
from resources.aux_sources import LocalMosaicSource
from resources.duckdb import DartsDuckDB
from resources.stac import StacCatalogue, StacCatalogueError, serve_stac_geoparquet, worst_case_request_s
from resources.storage import StorageRoot
from tests.conftest import stac_item
from tests.fault_writer import PRODUCT_NAME, write_scene_outputs
from tests.test_planet_catalogue import truncate_to_half
from tests.test_scene_sensor import tick

WEST, EAST, WEST_2021 = "20180716_192433_1035", "20180724_191215_0f3c", "20210715_193214_47_2413"
SCENES = (WEST, EAST, WEST_2021)
EAST_EDGE_OF_WEST_SCENES = 488_000  # UTM 8N easting: the west scenes end before it, EAST reaches 489 396
SCENE_JOB = "fault_scene_chain"


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> DemoRegion:
    return synthesise_demo_region(tmp_path_factory.mktemp("faults") / "demo_region")


@pytest.fixture
def folders(region: DemoRegion, tmp_path: Path) -> dict[str, Path]:
    """Copies of the three scenes' folders (free to damage), registered in ``tmp_path/catalogue.parquet``."""
    copies = {}
    for scene in region.scenes:
        if scene.item_id in SCENES:
            copies[scene.item_id] = Path(shutil.copytree(scene.folder, tmp_path / "planet" / scene.item_id))
    report = register_scene_folders(copies.values(), tmp_path / "catalogue.parquet")
    assert sorted(report.registered) == sorted(SCENES) and not report.failed
    return copies


def scene_file(folder: Path, suffix: str) -> Path:
    return next(folder.glob(f"*{suffix}"))


def demo_aux(region: DemoRegion, dem_path: Path | None = None) -> LocalMosaicSource:
    return LocalMosaicSource(
        dem_path=str(dem_path or region.dem_vrt), tcvis_path=str(region.tcvis), landcover_path=str(region.landcover)
    )


@dataclass
class GraphRun:
    outcomes: dict[str, RunOutcome]  # scene id -> its run
    materialised: dict[str, set[str]]  # asset name -> materialised scene partitions


def run_scene_graph(
    home: Path, assets: Sequence[AssetsDefinition], scene_ids: Sequence[str], aux: LocalMosaicSource
) -> GraphRun:
    """Materialise ``assets`` for every scene with the stage materialiser on a temporary instance."""
    defs = Definitions(
        assets=list(assets),
        jobs=[define_asset_job(SCENE_JOB, selection=list(assets), partitions_def=scene_partitions)],
        resources={
            "storage": StorageRoot(root=str(home / "home")),
            "stac_catalogue": StacCatalogue(catalogue_path=str(home / "catalogue.parquet")),
            "aux_layers": aux,
        },
    )
    outcomes = {}
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, list(scene_ids))
        for stage in plan_stages(defs):
            report = materialise_stage(defs, instance, stage, scene_ids)
            outcomes.update({outcome.partition_key: outcome for outcome in report.outcomes})
        materialised = {asset.key.to_user_string(): instance.get_materialized_partitions(asset.key) for asset in assets}
    return GraphRun(outcomes, materialised)


def assert_only_scene_failed(run: GraphRun, broken: str, *named: str) -> None:
    """``broken`` failed with its id and every ``named`` text in the message; every other scene succeeded."""
    for scene_id, outcome in run.outcomes.items():
        if scene_id == broken:
            assert not outcome.success
            assert f"scene {broken}" in outcome.error and all(text in outcome.error for text in named), outcome.error
            assert f"scene {broken}: scene {broken}" not in outcome.error, outcome.error  # named once
        else:
            assert outcome.success, outcome.error
    others = set(run.outcomes) - {broken}
    for asset, done in run.materialised.items():
        assert others <= done, f"{asset}: {sorted(others - done)} not materialised"


# --- scene inputs -----------------------------------------------------------------------------------------


def test_corrupt_or_truncated_geotiff_fails_that_scene_only(region, folders, tmp_path):
    truncated_sr = scene_file(folders[EAST], "_SR_clip.tif")
    truncate_to_half(truncated_sr)
    corrupt_udm2 = scene_file(folders[WEST_2021], "_udm2_clip.tif")
    with corrupt_udm2.open("r+b") as handle:
        handle.write(b"\x00garbage" * 64)  # the TIFF header and first directory overwritten
    run = run_scene_graph(tmp_path, [planet_scene_item, planet_scene], SCENES, demo_aux(region))
    assert run.outcomes[WEST].success
    for scene_id, path in ((EAST, truncated_sr), (WEST_2021, corrupt_udm2)):
        assert not run.outcomes[scene_id].success
        assert f"scene {scene_id}: cannot read {path.name}" in run.outcomes[scene_id].error
        assert f"scene {scene_id}: scene {scene_id}" not in run.outcomes[scene_id].error
    assert run.materialised == {"planet_scene_item": {WEST}, "planet_scene": {WEST}}


def test_missing_udm2_is_reported_at_registration_and_by_the_scene_asset(region, folders, tmp_path):
    udm2 = scene_file(folders[EAST], "_udm2_clip.tif")
    lost = udm2.rename(tmp_path / udm2.name)
    report = register_scene_folders([folders[EAST]], tmp_path / "other_catalogue.parquet")
    assert report.registered == [] and "no usable data mask" in report.failed[EAST]
    run = run_scene_graph(tmp_path, [planet_scene_item, planet_scene], SCENES, demo_aux(region))
    assert_only_scene_failed(run, EAST, f"cannot read {lost.name}")


def test_sr_with_wrong_band_count_fails_by_file(region, folders, tmp_path):
    sr = scene_file(folders[EAST], "_SR_clip.tif")
    with rasterio.open(sr) as source:
        bands, profile = source.read([1, 2, 3]), {**source.profile, "count": 3}
    with rasterio.open(sr, "w", **profile) as sink:
        sink.write(bands)
    run = run_scene_graph(tmp_path, [planet_scene_item, planet_scene], SCENES, demo_aux(region))
    assert_only_scene_failed(run, EAST, f"{sr.name} has 3 bands of uint16, expected 4 uint16")


def test_udm2_in_another_crs_than_the_sr_fails_by_file(region, folders, tmp_path):
    udm2 = scene_file(folders[EAST], "_udm2_clip.tif")
    with rasterio.open(udm2, "r+") as dataset:
        dataset.crs = CRS.from_epsg(32609)  # same numbers, the neighbouring UTM zone
    run = run_scene_graph(tmp_path, [planet_scene_item, planet_scene], SCENES, demo_aux(region))
    sr = scene_file(folders[EAST], "_SR_clip.tif")
    assert_only_scene_failed(run, EAST, f"{udm2.name} is not on the grid of {sr.name}")


def west_only_dem(region: DemoRegion, path: Path) -> Path:
    """The demo DEM cut west of ``EAST_EDGE_OF_WEST_SCENES``: it covers the west scenes, not EAST."""
    with rasterio.open(region.dem_vrt) as dem:
        bounds = transform_bounds(region.crs, dem.crs, 484_000, 7_462_800, EAST_EDGE_OF_WEST_SCENES, 7_467_000)
        window = from_bounds(*bounds, transform=dem.transform).round_offsets().round_lengths()
        profile = {**dem.profile, "driver": "GTiff", "width": window.width, "height": window.height}
        profile["transform"] = dem.window_transform(window)
        data = dem.read(window=window)
    with rasterio.open(path, "w", **profile) as sink:
        sink.write(data)
    return path


def test_aux_layer_not_covering_a_scene_fails_that_layer_only(region, folders, tmp_path):
    dem = west_only_dem(region, tmp_path / "west_dem.tif")
    assets = [planet_scene_item, planet_scene, scene_terrain]
    run = run_scene_graph(tmp_path, assets, SCENES, demo_aux(region, dem_path=dem))
    assert_only_scene_failed(run, EAST, "DEM (relative elevation, slope) source", dem.name, "covers 47.68%")
    assert EAST in run.materialised["planet_scene"]  # the scene's other assets still materialised


# --- catalogue and sensor ---------------------------------------------------------------------------------


def test_scene_id_with_dot_dot_is_skipped_by_the_sensor_and_cannot_escape_the_root(region, folders, tmp_path):
    catalogue = tmp_path / "catalogue.parquet"
    items = read_catalogue(catalogue)
    escaping = {**json.loads(json.dumps(items[0])), "id": "../escape"}
    rustac.write_sync(str(catalogue), [*items, escaping])
    with instance_for_test() as instance:
        discovered, _ = tick(instance, StacCatalogue(catalogue_path=str(catalogue)), None)
        assert sorted(discovered) == sorted(SCENES)
        assert "../escape" not in instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME)
    run = run_scene_graph(tmp_path, [planet_scene_item, planet_scene], [*SCENES, "../escape"], demo_aux(region))
    assert_only_scene_failed(run, "../escape", "'../escape'")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "home" / "escape").exists()


def test_duplicate_scene_is_catalogued_and_discovered_once(region, folders, tmp_path):
    second_copy = Path(shutil.copytree(folders[WEST], tmp_path / "second_download" / WEST))
    catalogue = tmp_path / "catalogue.parquet"
    report = register_scene_folders([second_copy], catalogue)
    items = read_catalogue(catalogue)
    assert report.registered == [WEST] and [item["id"] for item in items].count(WEST) == 1
    assert str(second_copy) in scene_item_href(items, WEST)  # the latest registration wins, in place
    served = tmp_path / "served_with_duplicates.parquet"  # an external API answering a scene twice
    rustac.write_sync(str(served), [*items, items[0]])
    with instance_for_test() as instance:
        discovered, _ = tick(instance, StacCatalogue(catalogue_path=str(served)), None)
        assert sorted(discovered) == sorted(SCENES)
        assert sorted(instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME)) == sorted(SCENES)
    run = run_scene_graph(tmp_path, [planet_scene_item], SCENES, demo_aux(region))
    assert all(outcome.success for outcome in run.outcomes.values())


def scene_item_href(items: list[dict], scene_id: str) -> str:
    return next(item for item in items if item["id"] == scene_id)["assets"]["sr"]["href"]


class StacProxy:
    """HTTP proxy in front of a STAC API that can refuse later pages (503) or stall first attempts."""

    def __init__(self, upstream: str, stall_s: float = 0.0):
        self.upstream, self.stall_s = upstream, stall_s
        self.fail_later_pages = False
        self.requests: list[tuple[str, str, bytes]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.answer(self)

            def do_POST(self) -> None:
                proxy.answer(self)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        signature = (handler.command, handler.path, body)
        first_attempt = signature not in self.requests
        self.requests.append(signature)
        if self.fail_later_pages and is_later_page(body):
            handler.send_error(503, "STAC API down")
            return
        if self.stall_s and first_attempt:
            threading.Event().wait(self.stall_s)  # longer than the client's timeout: it gives up and retries
        upstream = requests.request(
            handler.command,
            self.upstream + handler.path,
            data=body or None,
            headers={"Content-Type": "application/json"},
        )
        content = upstream.content.replace(self.upstream.encode(), self.url.encode())
        try:
            handler.send_response(upstream.status_code)
            handler.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
        except OSError:  # the client timed out and closed the connection
            pass

    def attempts_of_later_pages(self) -> int:
        return sum(is_later_page(body) for _, _, body in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def is_later_page(body: bytes) -> bool:
    """rustac's next links are POSTs whose body carries ``skip``."""
    return b'"skip"' in body


FIVE_SCENES = [f"202107{day:02d}_190000_00_24af" for day in range(1, 6)]


@pytest.fixture
def served_catalogue(tmp_path: Path):
    """Five scenes served by ``rustac serve``: three pages of two."""
    path = tmp_path / "five.parquet"
    rustac.write_sync(str(path), [stac_item(item_id, day=i + 1) for i, item_id in enumerate(FIVE_SCENES)])
    with serve_stac_geoparquet(path) as url:
        yield url


def test_stac_server_going_down_mid_scan_fails_the_tick_and_loses_nothing(served_catalogue):
    proxy = StacProxy(served_catalogue)
    catalogue = StacCatalogue(api_url=proxy.url, page_size=2, timeout_s=2, max_retries=2)
    try:
        proxy.fail_later_pages = True
        with instance_for_test() as instance:
            with pytest.raises(StacCatalogueError, match=f"STAC search at {proxy.url}/search.* failed"):
                tick(instance, catalogue, None)
            assert proxy.attempts_of_later_pages() == 1 + catalogue.max_retries  # retried (with backoff)
            assert instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME) == []  # the failed tick added nothing
            proxy.fail_later_pages = False
            discovered, _ = tick(instance, catalogue, None)  # the daemon keeps the previous cursor
            assert discovered == FIVE_SCENES
    finally:
        proxy.close()


def test_slow_stac_server_is_retried_and_ticks_stay_within_their_budget(served_catalogue, monkeypatch):
    defaults = StacCatalogue(api_url="http://unused")
    worst_request = worst_case_request_s(defaults.timeout_s, defaults.max_retries)
    assert 2 * worst_request <= sensors.TICK_BUDGET_S < DEFAULT_SENSOR_GRPC_TIMEOUT  # open + first page fit
    monkeypatch.setattr(sensors, "TICK_BUDGET_S", 0.0)  # no second page fits: one page per tick
    proxy = StacProxy(served_catalogue, stall_s=1.5)
    catalogue = StacCatalogue(api_url=proxy.url, page_size=2, timeout_s=1, max_retries=1)
    try:
        with instance_for_test() as instance:
            cursor, per_tick = None, []
            for _ in range(4):
                discovered, cursor = tick(instance, catalogue, cursor)
                per_tick.append(discovered)
        assert per_tick == [FIVE_SCENES[:2], FIVE_SCENES[2:4], FIVE_SCENES[4:], []]
        searches = [signature for signature in proxy.requests if "/search" in signature[1]]
        assert all(searches.count(signature) >= 2 for signature in searches)  # each stalled once, then retried
    finally:
        proxy.close()


# --- interrupted writes -----------------------------------------------------------------------------------


def catalogued(root: Path, folder: Path) -> Path:
    """``root`` with the scene's item.json, as ``planet_scene_item`` writes it."""
    item = scene_item(find_planet_assets(folder))
    StorageRoot(root=str(root)).write_bytes(json.dumps(item).encode(), SCENES_FOLDER, item["id"], "item.json")
    return root


def kill_while_publishing(root: Path, scene_id: str, file_name: str) -> Path:
    """Run ``write_scene_outputs`` in a process, SIGKILL it just before ``file_name`` is published; its temp file."""
    repo = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_writer", str(root), scene_id, file_name],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = writer.stdout.readline()
        assert line.startswith("paused "), f"the writer ended before {file_name}: {line!r}"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    return Path(line.split(" ", 1)[1].strip())


def test_sigkill_mid_write_leaves_no_partial_file_and_the_rerun_equals_a_clean_run(folders, tmp_path):
    clean = catalogued(tmp_path / "clean", folders[EAST])
    write_scene_outputs(clean, EAST)
    killed = catalogued(tmp_path / "killed", folders[EAST])
    catalogued(killed, folders[WEST])
    write_scene_outputs(killed, WEST)  # another scene's footprint and the product exist already
    product_before = (killed / "products" / f"{PRODUCT_NAME}.gpkg").read_bytes()
    footprint_glob = str(killed / FOOTPRINTS_FOLDER / "year=*" / "*.parquet")

    footprint = Path(FOOTPRINTS_FOLDER, "year=2018", f"{EAST}.parquet")  # EAST is a 2018 scene
    for target in (killed / SCENES_FOLDER / EAST / "valid_mask.tif", killed / footprint):  # raster, hive GeoParquet
        temp = kill_while_publishing(killed, EAST, target.name)
        assert temp.stat().st_size > 0 and temp.parent.name == PARTIAL_FOLDER  # bytes written, not published
        assert not target.exists()
        assert duckdb.sql(f"SELECT image_id FROM read_parquet('{footprint_glob}')").fetchall() == [(WEST,)]
    temp = kill_while_publishing(killed, EAST, f"{PRODUCT_NAME}.gpkg")  # the product
    assert temp.stat().st_size > 0 and (killed / "products" / f"{PRODUCT_NAME}.gpkg").read_bytes() == product_before

    write_scene_outputs(killed, EAST)  # the rerun completes
    for relative in (f"{SCENES_FOLDER}/{EAST}/valid_mask.tif", footprint, f"products/{PRODUCT_NAME}.parquet"):
        assert (killed / relative).read_bytes() == (clean / relative).read_bytes(), relative
    products = [gpd.read_file(root / "products" / f"{PRODUCT_NAME}.gpkg") for root in (clean, killed)]
    assert products[0].equals(products[1])  # GeoPackages carry a write time: compared by content
    rows = duckdb.sql(f"SELECT image_id FROM read_parquet('{footprint_glob}') ORDER BY image_id").fetchall()
    assert rows == sorted([(WEST,), (EAST,)])


# --- DuckDB -----------------------------------------------------------------------------------------------

OTHER_WRITER = """
import sys, time
from pathlib import Path
import duckdb
database, release_flag = sys.argv[1:3]
con = duckdb.connect(database)
con.execute("CREATE TABLE other_run AS SELECT 7 AS rows_written")
print("holding", flush=True)
while not Path(release_flag).exists():
    time.sleep(0.05)
con.close()
"""


def test_two_runs_writing_duckdb_at_once_the_second_retries_and_both_land(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "answer.sql").write_text("-- a one-row model\nSELECT 42 AS answer\n")
    database, release_flag = tmp_path / "darts.duckdb", tmp_path / "release"
    monkeypatch.setattr(sql_models, "LOCK_WAIT_S", 0.2)
    original_is_lock_error = sql_models.is_lock_error

    def lock_seen(error: BaseException) -> bool:  # let the other writer finish once our run has met its lock
        locked = original_is_lock_error(error)
        if locked:
            release_flag.touch()
        return locked

    monkeypatch.setattr(sql_models, "is_lock_error", lock_seen)
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_WRITER, str(database), str(release_flag)], stdout=subprocess.PIPE
    )
    try:
        assert other.stdout.readline().strip() == b"holding"
        with instance_for_test() as instance:
            result = materialize(
                sql_model_assets(models, {}),
                instance=instance,
                resources={"duckdb": DartsDuckDB(database=str(database)), "storage": StorageRoot(root=str(tmp_path))},
            )
            retries = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records
    finally:
        release_flag.touch()
        other.wait(timeout=60)
    assert result.success and len(retries) >= 1
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT * FROM answer").fetchall() == [(42,)]
        assert con.execute("SELECT * FROM other_run").fetchall() == [(7,)]
