"""The per-scene asset on real and broken catalogue items: good scenes materialise, bad ones fail by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rustac
from dagster import Definitions, instance_for_test, materialize

from darts_assets.definitions import defs
from darts_assets.scenes import planet_scene_item
from darts_core.planet_catalogue import find_planet_assets, scene_item
from partitions import SCENE_PARTITIONS_NAME
from resources.stac import StacCatalogue
from resources.storage import StorageRoot
from tests.conftest import stac_item

REAL_SCENE_ID = "20160909_213104_0e19"


def test_definitions_load():
    Definitions.validate_loadable(defs)


@pytest.fixture
def real_scene_folder(shared_data: Path, tmp_path: Path) -> Path:
    """The real PlanetScope scene's files, linked into a folder of their own (read in place)."""
    folder = tmp_path / "planet" / REAL_SCENE_ID
    folder.mkdir(parents=True)
    for source in (shared_data / "planetscope").glob(f"{REAL_SCENE_ID}*"):
        (folder / source.name).symlink_to(source)
    return folder


def materialise_scenes(tmp_path: Path, items: list[dict], keys: list[str]) -> dict[str, object]:
    """Catalogue ``items``, then materialise each partition key in its own run (as the sensor does)."""
    catalogue = tmp_path / "catalogue.parquet"
    rustac.write_sync(str(catalogue), items)
    resources = {
        "storage": StorageRoot(root=str(tmp_path / "home")),
        "stac_catalogue": StacCatalogue(catalogue_path=str(catalogue)),
    }
    results = {}
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, keys)
        for key in keys:
            results[key] = materialize(
                [planet_scene_item],
                instance=instance,
                resources=resources,
                partition_key=key,
                raise_on_error=False,
            )
    return results


def failure_message(result) -> str:
    return " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())


def test_real_scene_materialises_with_metadata_and_files(real_scene_folder, tmp_path):
    item = scene_item(find_planet_assets(real_scene_folder))
    result = materialise_scenes(tmp_path, [item], [REAL_SCENE_ID])[REAL_SCENE_ID]
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["crs"].value == "EPSG:32603"
    assert (metadata["width"].value, metadata["height"].value) == (1122, 1697)
    assert metadata["mask_kind"].value == "udm"
    assert metadata["year"].value == 2016
    written = tmp_path / "home" / "scenes" / REAL_SCENE_ID
    assert json.loads((written / "item.json").read_text())["id"] == REAL_SCENE_ID
    assert (written / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def broken_copy(item: dict, new_id: str) -> dict:
    copy = json.loads(json.dumps(item))
    copy["id"] = new_id
    return copy


def test_bad_items_fail_by_name_while_good_scenes_run(real_scene_folder, tmp_path):
    good = scene_item(find_planet_assets(real_scene_folder))
    truncated_tif = tmp_path / "truncated_SR.tif"
    shutil.copy(good["assets"]["sr"]["href"], truncated_tif)
    with truncated_tif.open("r+b") as handle:
        handle.truncate(truncated_tif.stat().st_size // 2)

    missing_mask = broken_copy(good, "20160909_213104_00_1111")
    del missing_mask["assets"]["udm"]
    truncated = broken_copy(good, "20160909_213104_00_2222")
    truncated["assets"]["sr"]["href"] = str(truncated_tif)
    unknown_type = broken_copy(good, "20160909_213104_00_3333")
    unknown_type["properties"]["pl:item_type"] = "REOrthoTile"
    not_in_catalogue = "20160909_213104_00_4444"

    items = [good, missing_mask, truncated, unknown_type]
    keys = [item["id"] for item in items] + [not_in_catalogue]
    results = materialise_scenes(tmp_path, items, keys)

    assert results[REAL_SCENE_ID].success
    expectations = {
        missing_mask["id"]: "no udm2 asset",
        truncated["id"]: "truncated_SR.tif",
        unknown_type["id"]: "unknown item type 'REOrthoTile'",
        not_in_catalogue: "not found in the scene catalogue",
    }
    for scene_id, expected in expectations.items():
        assert not results[scene_id].success
        message = failure_message(results[scene_id])
        assert f"scene {scene_id}" in message and expected in message


def test_partition_key_that_would_escape_the_root_fails_cleanly(tmp_path):
    result = materialise_scenes(tmp_path, [stac_item("../x")], ["../x"])["../x"]
    assert not result.success
    assert "'../x'" in failure_message(result)
    assert not (tmp_path / "x").exists()
