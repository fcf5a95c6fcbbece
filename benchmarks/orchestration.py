"""Orchestration at DARTS v1 size: 17,000 scenes through the scene sensor, the UI's partition page, the year sensor.

    uv run python benchmarks/orchestration.py [--scenes 17000] [--skip-ui]

1. 17,000 synthetic PSScene items (the catalogue's stac-geoparquet schema; no rasters: the sensor only reads the
   catalogue) are served by the ``StacCatalogue`` resource (``rustac serve`` on loopback), and
   ``planet_scene_sensor`` is ticked against a persistent SQLite instance, as the daemon does, until it finds
   nothing new: seconds and pages per tick (resource start-up included), adding the dynamic partitions apart.
2. ``dagster-webserver`` on that instance and the code location; the GraphQL queries of an asset's partition page
   (partition keys, partition statuses and stats of the 17,000-partition ``planet_scene``) are timed.
3. 17,000 runless ``planet_scene`` materialisations are reported, then ``year_sensor`` chooses the years: its
   first tick (every event) and an incremental one (10 new events).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import rustac
from dagster import AssetMaterialization, DagsterInstance, SkipReason, build_sensor_context
from dagster._grpc.client import DEFAULT_SENSOR_GRPC_TIMEOUT

from darts_assets import sensors
from darts_assets.sensors import planet_scene_sensor, year_sensor
from partitions import SCENE_PARTITIONS_NAME
from resources.stac import StacCatalogue, StacSearch, free_loopback_port

YEARS = (2018, 2019, 2020, 2021, 2022, 2023)
REPO = Path(__file__).resolve().parents[1]
PARTITION_PAGE_QUERY = """
query PartitionPage($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numMaterializing numFailed numPartitions }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}
"""


def synthetic_item(index: int, rng: random.Random) -> dict:
    """A PSScene item as the catalogue stores it (projection/eo properties, SR, udm2 and metadata assets)."""
    year = YEARS[index % len(YEARS)]
    moment = dt.datetime(year, 6, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(100 * 86400))
    item_id = f"{moment:%Y%m%d_%H%M%S}_{index % 100:02d}_{index % 0xFFFF:04x}"
    lon, lat = rng.uniform(-180, 179.9), rng.uniform(62, 80)
    ring = [[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.05], [lon, lat + 0.05], [lon, lat]]
    folder = f"/data/planet/{item_id}/{item_id}"
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": "planet",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [lon, lat, lon + 0.1, lat + 0.05],
        "properties": {
            "datetime": moment.isoformat().replace("+00:00", "Z"),
            "constellation": "planetscope",
            "eo:cloud_cover": round(rng.uniform(0, 30), 2),
            "pl:item_type": "PSScene",
            "proj:code": "EPSG:32608",
            "proj:shape": [4000, 8000],
            "darts:year": year,
        },
        "links": [],
        "assets": {
            "sr": {"href": f"{folder}_3B_AnalyticMS_SR_clip.tif", "type": "image/tiff; application=geotiff"},
            "udm2": {"href": f"{folder}_3B_udm2_clip.tif", "type": "image/tiff; application=geotiff"},
            "metadata": {"href": f"{folder}_metadata.json", "type": "application/json"},
        },
    }


def write_catalogue(path: Path, count: int) -> list[str]:
    rng = random.Random(0)
    items = [synthetic_item(index, rng) for index in range(count)]
    rustac.write_sync(str(path), items)
    return [item["id"] for item in items]


def tick_scene_sensor_until_done(instance: DagsterInstance, catalogue: StacCatalogue) -> list[dict]:
    """Tick as the daemon does (cursor kept, partitions added) until a tick finds nothing new."""
    ticks, cursor = [], None
    while True:
        started = time.perf_counter()
        with (
            counted_pages() as pages,
            build_sensor_context(instance=instance, cursor=cursor, resources={"stac_catalogue": catalogue}) as context,
        ):
            result = planet_scene_sensor(context)
        tick_s = time.perf_counter() - started
        if isinstance(result, SkipReason):
            raise RuntimeError(f"the sensor skipped: {result.skip_message}")
        added = time.perf_counter()
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, list(request.partition_keys))
        add_s = time.perf_counter() - added
        ticks.append({"tick_s": tick_s, "add_s": add_s, "pages": pages[0], "new": len(result.run_requests)})
        cursor = result.cursor
        print(
            f"  tick {len(ticks)}: {tick_s:.2f} s, {pages[0]} pages, {len(result.run_requests)} new, add {add_s:.2f} s"
        )
        if not result.run_requests:
            return ticks


@contextmanager
def counted_pages() -> Iterator[list[int]]:
    """Count ``StacSearch.fetch`` calls (pages read) into the yielded one-element list."""
    fetch, count = StacSearch.fetch, [0]

    def counting_fetch(self, *args, **kwargs):
        count[0] += 1
        return fetch(self, *args, **kwargs)

    StacSearch.fetch = counting_fetch
    try:
        yield count
    finally:
        StacSearch.fetch = fetch


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, float]:
    """(best, median) seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


@contextmanager
def webserver(instance_home: Path) -> Iterator[str]:
    """``dagster-webserver`` on the code location and this instance, on a free loopback port."""
    port = free_loopback_port()
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-m", "darts_assets.definitions"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "DAGSTER_HOME": str(instance_home)}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok and workspace_loaded(url):
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)


def workspace_loaded(url: str) -> bool:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
    entries = graphql(url, query)["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=300)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def time_partition_page(instance_home: Path, scenes: int) -> dict[str, float]:
    with webserver(instance_home) as url:
        variables = {"assetKey": {"path": ["planet_scene"]}}
        node = graphql(url, PARTITION_PAGE_QUERY, variables)["assetNodeOrError"]
        keys = node["partitionKeysByDimension"][0]["partitionKeys"]
        assert len(keys) == scenes, f"{len(keys)} partition keys, expected {scenes}"
        best, median = best_of(5, lambda: graphql(url, PARTITION_PAGE_QUERY, variables))
    return {"partition_page_best_s": best, "partition_page_median_s": median, "stats": node["partitionStats"]}


def report_materialisations(instance: DagsterInstance, scene_ids: list[str]) -> float:
    started = time.perf_counter()
    for scene_id in scene_ids:
        instance.report_runless_asset_event(AssetMaterialization(asset_key="planet_scene", partition=scene_id))
    return time.perf_counter() - started


def time_year_sensor(instance: DagsterInstance, cursor: str | None) -> tuple[float, object]:
    started = time.perf_counter()
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        result = year_sensor(context)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=17_000)
    parser.add_argument("--skip-ui", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="darts-orchestration-") as temp:
        home = Path(temp)
        started = time.perf_counter()
        scene_ids = write_catalogue(home / "planet_scenes.parquet", args.scenes)
        print(f"catalogue of {len(scene_ids)} items written in {time.perf_counter() - started:.1f} s")
        (home / "dagster").mkdir()
        (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        instance = DagsterInstance.from_config(str(home / "dagster"))
        catalogue = StacCatalogue(catalogue_path=str(home / "planet_scenes.parquet"))

        print(f"scene sensor: {sensors.MAX_PAGES_PER_TICK} pages of {catalogue.page_size} per tick at most")
        ticks = tick_scene_sensor_until_done(instance, catalogue)
        found = len(instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME))
        tick_times = [tick["tick_s"] for tick in ticks]
        print(
            f"  {len(ticks)} ticks, {found} partitions; tick max {max(tick_times):.2f} s, "
            f"mean {statistics.mean(tick_times):.2f} s; sensor timeout {DEFAULT_SENSOR_GRPC_TIMEOUT} s, "
            f"tick budget {sensors.TICK_BUDGET_S} s; total {sum(t['tick_s'] + t['add_s'] for t in ticks):.1f} s"
        )
        if not args.skip_ui:
            page = time_partition_page(home / "dagster", len(scene_ids))
            print(
                f"UI partition page of planet_scene ({len(scene_ids)} partitions; keys, statuses, stats): "
                f"best {page['partition_page_best_s']:.2f} s, median {page['partition_page_median_s']:.2f} s "
                f"of 5; stats {page['stats']}"
            )
        # ~50 ms per event on the persistent SQLite instance (a commit each): the year sensor's queries are
        # timed on an in-memory one holding the same 17,000 events
        instance = DagsterInstance.ephemeral()
        report_s = report_materialisations(instance, scene_ids)
        print(f"{len(scene_ids)} runless planet_scene materialisations reported in {report_s:.1f} s (in memory)")
        first_s, first = time_year_sensor(instance, None)
        print(f"year sensor, first tick over every event: {first_s:.3f} s, {len(first.run_requests)} year runs")
        report_materialisations(instance, scene_ids[:10])
        next_s, later = time_year_sensor(instance, first.cursor)
        print(f"year sensor, incremental tick (10 new events): {next_s:.3f} s, {len(later.run_requests)} year runs")


if __name__ == "__main__":
    main()
