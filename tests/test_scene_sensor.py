"""The scene sensor against a real STAC API (``rustac serve`` on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rustac
from dagster import SkipReason, build_sensor_context, instance_for_test

import darts_assets.sensors as sensors
from darts_assets.sensors import planet_scene_sensor
from partitions import SCENE_PARTITIONS_NAME
from resources.stac import StacCatalogue, StacCatalogueError, free_loopback_port
from tests.conftest import stac_item

SCENE_IDS = [f"202107{day:02d}_190000_00_24af" for day in range(1, 6)]


def write_catalogue(path: Path, items: list[dict]) -> None:
    rustac.write_sync(str(path), items)


def tick(instance, catalogue: StacCatalogue, cursor: str | None):
    """One sensor evaluation, applying its partition requests like the daemon does."""
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"stac_catalogue": catalogue}
    ) as context:
        result = planet_scene_sensor(context)
    if isinstance(result, SkipReason):
        return [], cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, list(request.partition_keys))
    return [request.partition_key for request in result.run_requests], result.cursor


@pytest.fixture
def catalogue_file(tmp_path: Path) -> Path:
    path = tmp_path / "planet_scenes.parquet"
    write_catalogue(path, [stac_item(item_id, day=i + 1) for i, item_id in enumerate(SCENE_IDS)])
    return path


def test_discovers_every_scene_across_pages_and_ticks(catalogue_file, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_PAGES_PER_TICK", 2)
    catalogue = StacCatalogue(catalogue_path=str(catalogue_file), page_size=2)
    with instance_for_test() as instance:
        first, cursor = tick(instance, catalogue, None)
        assert first == SCENE_IDS[:4]  # two pages of two
        second, cursor = tick(instance, catalogue, cursor)
        assert second == SCENE_IDS[4:]
        assert sorted(instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME)) == sorted(SCENE_IDS)
        third, _ = tick(instance, catalogue, cursor)
        assert third == []


def test_run_requests_carry_item_id_as_run_key(catalogue_file):
    catalogue = StacCatalogue(catalogue_path=str(catalogue_file))
    with instance_for_test() as instance:
        with build_sensor_context(instance=instance, resources={"stac_catalogue": catalogue}) as context:
            result = planet_scene_sensor(context)
        assert [(r.run_key, r.partition_key) for r in result.run_requests] == [(i, i) for i in SCENE_IDS]


def test_idempotent_without_cursor_when_partitions_exist(catalogue_file):
    catalogue = StacCatalogue(catalogue_path=str(catalogue_file))
    with instance_for_test() as instance:
        discovered, _ = tick(instance, catalogue, None)
        assert discovered == SCENE_IDS
        again, _ = tick(instance, catalogue, None)
        assert again == []


def test_late_scene_is_picked_up_alone(catalogue_file, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_PAGES_PER_TICK", 1)
    catalogue = StacCatalogue(catalogue_path=str(catalogue_file), page_size=2)
    with instance_for_test() as instance:
        cursor = None
        for _ in range(4):
            _, cursor = tick(instance, catalogue, cursor)
        late_id = "20210630_120000_11_2413"  # acquired earlier than the others, catalogued later
        items = [stac_item(item_id, day=i + 1) for i, item_id in enumerate(SCENE_IDS)]
        write_catalogue(catalogue_file, [*items, stac_item(late_id, day=30)])
        discovered, cursor = tick(instance, catalogue, cursor)
        assert discovered == [late_id]
        assert tick(instance, catalogue, cursor)[0] == []


def test_item_with_unsafe_id_is_skipped_and_others_discovered(tmp_path):
    path = tmp_path / "catalogue.parquet"
    write_catalogue(path, [stac_item(SCENE_IDS[0]), stac_item("../x"), stac_item(SCENE_IDS[1])])
    catalogue = StacCatalogue(catalogue_path=str(path))
    with instance_for_test() as instance:
        discovered, _ = tick(instance, catalogue, None)
        assert discovered == SCENE_IDS[:2]
        assert "../x" not in instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME)


def test_cloud_cover_filtered_client_side(tmp_path):
    path = tmp_path / "catalogue.parquet"
    items = [stac_item(item_id, day=i + 1, cloud_cover=20.0 * i) for i, item_id in enumerate(SCENE_IDS)]
    write_catalogue(path, items)
    catalogue = StacCatalogue(catalogue_path=str(path), max_cloud_cover=30.0)
    with instance_for_test() as instance:
        with catalogue.serving() as url:
            catalogue._url = url
            assert not catalogue.search().server_filters_cloud_cover  # rustac's memory backend
        discovered, _ = tick(instance, catalogue, None)
        assert discovered == SCENE_IDS[:2]


def test_datetime_and_bbox_restrict_the_search(tmp_path):
    path = tmp_path / "catalogue.parquet"
    items = [
        stac_item(SCENE_IDS[0], day=1),
        stac_item(SCENE_IDS[1], day=20),
        stac_item(SCENE_IDS[2], lon=20.0),
    ]
    write_catalogue(path, items)
    catalogue = StacCatalogue(
        catalogue_path=str(path),
        datetime="2021-07-10T00:00:00Z/2021-07-31T00:00:00Z",
        bbox=[-136, 67, -134, 68],
    )
    with instance_for_test() as instance:
        assert tick(instance, catalogue, None)[0] == [SCENE_IDS[1]]


def test_changed_search_restarts_from_the_first_page(catalogue_file):
    narrow = StacCatalogue(
        catalogue_path=str(catalogue_file), datetime="2021-07-01T00:00:00Z/2021-07-02T00:00:00Z"
    )
    wide = StacCatalogue(catalogue_path=str(catalogue_file), page_size=2)
    with instance_for_test() as instance:
        discovered, cursor = tick(instance, narrow, None)
        assert discovered == SCENE_IDS[:1]
        assert tick(instance, wide, cursor)[0] == SCENE_IDS[1:]


def test_empty_catalogue_skips(tmp_path):
    catalogue = StacCatalogue(catalogue_path=str(tmp_path / "missing.parquet"))
    with instance_for_test() as instance:
        with build_sensor_context(instance=instance, resources={"stac_catalogue": catalogue}) as context:
            assert isinstance(planet_scene_sensor(context), SkipReason)


def test_unreachable_api_fails_the_tick_clearly():
    url = f"http://127.0.0.1:{free_loopback_port()}"
    catalogue = StacCatalogue(api_url=url, max_retries=1, timeout_s=1)
    with instance_for_test() as instance:
        with pytest.raises(StacCatalogueError, match=f"STAC API at {url} is not reachable"):
            with build_sensor_context(instance=instance, resources={"stac_catalogue": catalogue}) as context:
                planet_scene_sensor(context)
