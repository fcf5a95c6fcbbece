"""Per-scene input assets on a demo scene: files, formats, tags; bad aux layers fail by scene, the rest runs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from dagster import AssetKey, instance_for_test, materialize
from shapely.geometry import box

from darts_assets.scene_inputs import SCENE_INPUT_ASSETS
from darts_assets.scenes import planet_scene_item
from darts_core.demo_region import DemoRegion, synthesise_demo_region
from darts_core.params import BAND_ORDER_TCVIS
from darts_core.planet_catalogue import register_scene_folders
from partitions import SCENE_PARTITIONS_NAME
from resources.aux_sources import LocalMosaicSource
from resources.stac import StacCatalogue
from resources.storage import StorageRoot

CLOUDY_SCENE = "20220712_194511_03_2447"
INPUT_ASSETS = [planet_scene_item, *SCENE_INPUT_ASSETS]


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> DemoRegion:
    return synthesise_demo_region(tmp_path_factory.mktemp("demo") / "demo_region")


def materialise_scene(home: Path, region: DemoRegion, scene_id: str, aux: LocalMosaicSource):
    catalogue = home / "catalogue.parquet"
    folder = next(scene.folder for scene in region.scenes if scene.item_id == scene_id)
    register_scene_folders([folder], catalogue)
    resources = {
        "storage": StorageRoot(root=str(home)),
        "stac_catalogue": StacCatalogue(catalogue_path=str(catalogue)),
        "aux_layers": aux,
    }
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, [scene_id])
        result = materialize(
            INPUT_ASSETS, instance=instance, resources=resources, partition_key=scene_id, raise_on_error=False
        )
        materialised = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    return result, materialised


def demo_aux(region: DemoRegion, **overrides) -> LocalMosaicSource:
    paths = {"dem_path": str(region.dem_vrt), "tcvis_path": str(region.tcvis), "landcover_path": str(region.landcover)}
    return LocalMosaicSource(**{**paths, **overrides})


def test_cloudy_demo_scene_inputs(region, tmp_path):
    result, materialised = materialise_scene(tmp_path, region, CLOUDY_SCENE, demo_aux(region))
    assert result.success
    assert materialised == {asset.key.to_user_string() for asset in INPUT_ASSETS}
    folder = tmp_path / "scenes" / CLOUDY_SCENE
    with rasterio.open(folder / "input_stack.tif") as stack, rasterio.open(folder / "valid_mask.tif") as valid:
        assert stack.descriptions == BAND_ORDER_TCVIS
        assert stack.profile["tiled"] and stack.compression is not None
        assert "normalisation" in stack.tags()
        data, valid_mask = stack.read(), valid.read(1).astype(bool)
        assert 0.3 < valid_mask.mean() < 0.9  # clouds and the footprint edge are masked
        assert not data[:, ~valid_mask].any()  # invalid pixels zeroed
        assert data[:, valid_mask].any(axis=1).all()  # every band carries data where valid
        scene_box = box(*stack.bounds)
    footprints = gpd.read_parquet(tmp_path / "footprints" / "year=2022" / f"{CLOUDY_SCENE}.parquet")
    assert footprints.crs.to_epsg() == 4326
    footprint = footprints.to_crs(region.crs).geometry.iloc[0]
    assert footprint.is_valid and scene_box.buffer(1).contains(footprint)
    assert footprint.area < 0.95 * scene_box.area  # the data footprint, not the bbox
    metadata = result.asset_materializations_for_node("input_stack")[0].metadata
    assert "data:image/png;base64" in metadata["quicklook"].value


def test_dem_not_covering_the_scene_fails_that_asset_by_name(region, tmp_path, shared_data):
    aux = demo_aux(region, dem_path=str(shared_data / "dem" / "DEM_1995.tif"))  # Svalbard, not the Peel Plateau
    result, materialised = materialise_scene(tmp_path, region, CLOUDY_SCENE, aux)
    assert not result.success
    message = " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())
    assert f"scene {CLOUDY_SCENE}" in message and "DEM_1995.tif" in message
    assert {"planet_scene", "scene_tcvis", "scene_water_mask"} <= materialised  # the rest still materialised
    assert "input_stack" not in materialised and not (tmp_path / "scenes" / CLOUDY_SCENE / "input_stack.tif").exists()
    assert AssetKey("scene_terrain").to_user_string() not in materialised


def test_tcvis_with_wrong_band_count_fails_by_file(region, tmp_path):
    aux = demo_aux(region, tcvis_path=str(region.landcover))
    result, _ = materialise_scene(tmp_path, region, CLOUDY_SCENE, aux)
    message = " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())
    assert f"scene {CLOUDY_SCENE}" in message and Path(region.landcover).name in message
