"""Prediction assets on one demo scene with real-architecture checkpoints; bad checkpoints fail by file."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import torch
from dagster import instance_for_test, materialize

from darts_assets.predictions import PREDICTION_ASSETS, PROBABILITY_NODATA
from darts_assets.scene_inputs import SCENE_INPUT_ASSETS
from darts_assets.scenes import planet_scene_item
from darts_core.demo_region import synthesise_demo_region
from darts_core.level1 import LEVEL1_COLUMNS
from darts_core.model import build_model, checkpoint_config, save_checkpoint
from darts_core.params import ModelParams, StackParams, TrainingParams
from darts_core.planet_catalogue import register_scene_folders
from partitions import SCENE_PARTITIONS_NAME
from resources.aux_sources import LocalMosaicSource
from resources.gpu import TorchDevice
from resources.stac import StacCatalogue
from resources.storage import StorageRoot
from tests.checkpoints import save_untrained_checkpoints

SCENE = "20230718_193502_88_24b5"
INPUT_ASSETS = [planet_scene_item, *SCENE_INPUT_ASSETS]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A storage root with one demo scene's inputs materialised and untrained real-architecture checkpoints."""
    root = tmp_path_factory.mktemp("home")
    region = synthesise_demo_region(root / "demo_region")
    register_scene_folders([scene.folder for scene in region.scenes if scene.item_id == SCENE], root / "cat.parquet")
    result = run(root, INPUT_ASSETS)
    assert result.success
    save_untrained_checkpoints(root / "models")
    return root


def run(root: Path, assets):
    aux = root / "demo_region" / "aux"
    resources = {
        "storage": StorageRoot(root=str(root)),
        "stac_catalogue": StacCatalogue(catalogue_path=str(root / "cat.parquet")),
        "aux_layers": LocalMosaicSource(
            dem_path=str(aux / "arcticdem_mosaic.vrt"),
            tcvis_path=str(aux / "tcvis.tif"),
            landcover_path=str(aux / "landcover.tif"),
        ),
        "gpu": TorchDevice(device="cpu"),
    }
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, [SCENE])
        return materialize(assets, instance=instance, resources=resources, partition_key=SCENE, raise_on_error=False)


def test_predictions_rasters_and_level1(home):
    result = run(home, PREDICTION_ASSETS)
    assert result.success
    folder = home / "scenes" / SCENE
    with rasterio.open(folder / "valid_mask.tif") as source:
        valid = source.read(1).astype(bool)
    for name in ("probability_tcvis", "probability_notcvis", "probability_ensemble"):
        with rasterio.open(folder / f"{name}.tif") as source:
            percent, tags = source.read(1), source.tags()
            assert source.dtypes[0] == "uint8" and source.nodata == PROBABILITY_NODATA
            assert source.compression is not None
        assert (percent[~valid] == PROBABILITY_NODATA).all() and (percent[valid] <= 100).all()
        recorded = json.loads(tags["run"]) if "run" in tags else json.loads(tags["members"])
        assert "untrained" in json.dumps(recorded)  # the model version travels with the raster
    with rasterio.open(folder / "cleaned_mask.tif") as source:
        assert json.loads(source.tags()["cleaning"])["min_object_px"] == 32
    features = gpd.read_parquet(home / "level1" / "year=2023" / f"{SCENE}.parquet")
    assert tuple(features.columns) == LEVEL1_COLUMNS  # possibly empty for an untrained model: schema still there


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_bad_checkpoint_fails_the_scene_naming_the_file(home, damage, tmp_path):
    checkpoint = home / "models" / "tcvis.pt"
    original = checkpoint.read_bytes()
    try:
        if damage == "truncated":
            checkpoint.write_bytes(original[: len(original) // 3])
        else:
            torch.save({"weight": torch.zeros(3)}, checkpoint)
        result = run(home, PREDICTION_ASSETS[:1])
        assert not result.success
        message = " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())
        assert f"scene {SCENE}" in message and str(checkpoint) in message
    finally:
        checkpoint.write_bytes(original)


def test_no_tcvis_bands_in_stack_is_a_clear_error(home, tmp_path):
    """A checkpoint expecting bands the stack lacks names both files."""
    checkpoint = home / "models" / "notcvis.pt"
    original = checkpoint.read_bytes()
    try:
        config = checkpoint_config(
            name="wrong_bands",
            model_params=ModelParams(),
            training_params=TrainingParams.demo(),
            bands=("ndvi", "blue", "green", "red", "nir", "relative_elevation", "aspect"),
            normalisation={**StackParams().normalisation, "aspect": StackParams().normalisation["slope"]},
            training_scene_ids=[],
            validation_scene_ids=[],
            history=[],
        )
        save_checkpoint(checkpoint, build_model(ModelParams(), 7).eval(), config)
        result = run(home, PREDICTION_ASSETS[1:2])
        message = " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())
        assert not result.success and "aspect" in message and str(checkpoint) in message
    finally:
        checkpoint.write_bytes(original)
