"""Per-scene predictions: probabilities per model (GPU pool), ensemble, cleaned mask, Level-1 features.

Probability rasters are uint8 percent (0-100) with nodata 255 outside the valid pixels; their tags record
every parameter and the model versions.
"""

import datetime as dt
import json
import time

import numpy as np
import rasterio
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    SpecificPartitionsPartitionMapping,
    asset,
)

from darts_assets.batching import SCENE_BACKFILL_POLICY, materialize_scenes
from darts_assets.placement import GPU_OP_TAGS
from darts_assets.scene_inputs import (
    SCENES_FOLDER,
    failing_scene,
    input_stack,
    planet_scene,
    scene_water_mask,
    write_scene_raster,
)
from darts_assets.scenes import planet_scene_item
from darts_assets.training import MODELS_FOLDER, model_checkpoint
from darts_core.cleaning import clean_mask, ensemble_mean, polygonise
from darts_core.inference import predict_probabilities
from darts_core.level1 import level1_features, write_level1
from darts_core.model import check_bands
from darts_core.params import CleaningParams, InferenceParams, ProductParams, as_metadata
from darts_core.rasters import Grid, bounded_gdal_cache
from darts_core.stack import read_stack_tags
from partitions import MODEL_VARIANTS, scene_partitions
from resources.gpu import TorchDevice
from resources.storage import StorageRoot

PROBABILITY_NODATA = 255
LEVEL1_FOLDER = "level1"


def probability_file(variant: str) -> str:
    return f"probability_{variant}.tif"


def read_raster(storage: StorageRoot, scene_id: str, name: str) -> tuple[np.ndarray, Grid, dict]:
    with storage.local_input(SCENES_FOLDER, scene_id, name) as path, rasterio.open(path) as source:
        grid = Grid(source.crs.to_string(), source.transform, source.width, source.height)
        return source.read(1), grid, source.tags()


def write_percent(storage: StorageRoot, scene_id: str, name: str, probability, valid, grid: Grid, tags: dict) -> str:
    percent = np.rint(probability * 100).astype(np.uint8)
    percent[~valid] = PROBABILITY_NODATA
    return write_scene_raster(storage, scene_id, name, percent, grid, ["probability_percent"], PROBABILITY_NODATA, tags)


def read_percent(storage: StorageRoot, scene_id: str, name: str) -> tuple[np.ndarray, Grid, dict]:
    percent, grid, tags = read_raster(storage, scene_id, name)
    return np.where(percent == PROBABILITY_NODATA, 0, percent).astype(np.float32) / 100, grid, tags


def predict_scene(storage: StorageRoot, gpu: TorchDevice, scene_id: str, variant: str) -> tuple[np.ndarray, dict]:
    """Blended probabilities of one model over the scene's input stack, and what describes the run."""
    checkpoint = storage.cached_input(MODELS_FOLDER, f"{variant}.pt")  # a stable local copy when remote
    model, config = gpu.load_model(checkpoint)
    params = InferenceParams()
    with storage.local_input(SCENES_FOLDER, scene_id, "input_stack.tif") as stack_path:
        stack_bands, normalisation = read_stack_tags(stack_path)
        missing = [band for band in config["bands"] if band not in stack_bands]
        if missing:
            raise ValueError(f"checkpoint {checkpoint} needs bands {missing} that stack {stack_path} lacks")
        check_bands(config, config["bands"], checkpoint, {band: normalisation[band] for band in config["bands"]})
        indexes = [stack_bands.index(band) + 1 for band in config["bands"]]
        started, started_at = time.perf_counter(), time.time()
        with bounded_gdal_cache(), rasterio.open(stack_path) as stack:
            height, width = stack.height, stack.width

            def read_window(row: int, col: int, rows: int, cols: int) -> np.ndarray:
                window = rasterio.windows.Window(col, row, cols, rows)
                return stack.read(indexes, window=window).astype(np.float32, copy=False)

            result = predict_probabilities(
                read_window,
                height,
                width,
                model,
                params,
                device=gpu.torch_device(),
                autocast_dtype=gpu.autocast_dtype(),
                channels_last=gpu.channels_last,
                batch_size=gpu.batch_size,
            )
    seconds = time.perf_counter() - started
    run = {
        "model": config["name"],
        "model_created": config["created"],
        "checkpoint": str(storage.path(MODELS_FOLDER, f"{variant}.pt")),
        "inference": as_metadata(params),
        "device": gpu.describe(),
        "final_batch_size": result.batch_size,
        "patches": result.patches,
        "seconds": round(seconds, 3),
        "pixels_per_second": round(height * width / seconds),
        "device_interval": [round(started_at, 3), round(started_at + seconds, 3)],  # unix s, the model at work
    }
    return result.probabilities, run


def probability_asset(variant: str) -> AssetsDefinition:
    @asset(
        name=f"probability_{variant}",
        partitions_def=scene_partitions,
        deps=[
            input_stack,
            planet_scene,
            AssetDep(model_checkpoint, partition_mapping=SpecificPartitionsPartitionMapping([variant])),
        ],
        group_name="predictions",
        kinds={"pytorch", "geotiff"},
        pool="gpu",
        op_tags=GPU_OP_TAGS,
        backfill_policy=SCENE_BACKFILL_POLICY,
        description=f"Probability (percent, uint8) of the {variant} model, patches blended with linear ramps.",
    )
    def probability(context: AssetExecutionContext, storage: StorageRoot, gpu: TorchDevice) -> MaterializeResult:
        with gpu.exclusive():
            return materialize_scenes(context, lambda scene_id: write_probability(storage, gpu, scene_id, variant))

    return probability


def write_probability(storage: StorageRoot, gpu: TorchDevice, scene_id: str, variant: str) -> MaterializeResult:
    """One model's probability raster of one scene; ``model_loaded`` is False when the run had it loaded."""
    loads_before = gpu.model_loads
    with failing_scene(scene_id):
        probabilities, run = predict_scene(storage, gpu, scene_id, variant)
        valid, grid, _ = read_raster(storage, scene_id, "valid_mask.tif")
        path = write_percent(
            storage, scene_id, probability_file(variant), probabilities, valid.astype(bool), grid, {"run": run}
        )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(path),
            "run": MetadataValue.json(run),
            "pixels_per_second": run["pixels_per_second"],
            "positive_fraction": float((probabilities[valid.astype(bool)] >= 0.5).mean()),
            "model_loaded": gpu.model_loads > loads_before,
        }
    )


PROBABILITY_ASSETS = [probability_asset(variant) for variant in MODEL_VARIANTS]


@asset(
    partitions_def=scene_partitions,
    deps=PROBABILITY_ASSETS,
    group_name="predictions",
    kinds={"geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Ensemble probability: the mean of the tcvis and notcvis probabilities.",
)
def ensemble_probability(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_ensemble_probability(storage, scene_id))


def write_ensemble_probability(storage: StorageRoot, scene_id: str) -> MaterializeResult:
    with failing_scene(scene_id):
        members = [read_percent(storage, scene_id, probability_file(variant)) for variant in MODEL_VARIANTS]
        probability = ensemble_mean([member[0] for member in members])
        valid, grid, _ = read_raster(storage, scene_id, "valid_mask.tif")
        tags = {
            "members": {
                variant: json.loads(member[2]["run"]) for variant, member in zip(MODEL_VARIANTS, members, strict=True)
            }
        }
        path = write_percent(storage, scene_id, "probability_ensemble.tif", probability, valid.astype(bool), grid, tags)
    return MaterializeResult(
        metadata={"path": MetadataValue.path(path), "members": MetadataValue.json(tags["members"])}
    )


@asset(
    partitions_def=scene_partitions,
    deps=[ensemble_probability, scene_water_mask],
    group_name="predictions",
    kinds={"geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Cleaned binary mask: threshold; objects touching the edge zone, small or watery objects removed.",
)
def cleaned_mask(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_cleaned_mask(storage, scene_id))


def write_cleaned_mask(storage: StorageRoot, scene_id: str) -> MaterializeResult:
    params = CleaningParams()
    with failing_scene(scene_id):
        probability, grid, ensemble_tags = read_percent(storage, scene_id, "probability_ensemble.tif")
        valid, _, _ = read_raster(storage, scene_id, "valid_mask.tif")
        water, _, _ = read_raster(storage, scene_id, "water_mask.tif")
        result = clean_mask(probability, valid.astype(bool), water.astype(bool), params)
        tags = {"cleaning": as_metadata(params), "members": json.loads(ensemble_tags["members"])}
        write_scene_raster(
            storage, scene_id, "cleaned_mask.tif", result.mask.astype(np.uint8), grid, ["rts"], tags=tags
        )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(storage.path(SCENES_FOLDER, scene_id, "cleaned_mask.tif"))),
            "parameters": MetadataValue.json(as_metadata(params)),
            "objects": MetadataValue.json(result.summary()),
            "positive_fraction": float(result.mask.mean()),
        }
    )


@asset(
    partitions_def=scene_partitions,
    deps=[cleaned_mask, planet_scene_item],
    group_name="predictions",
    kinds={"geoparquet"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Level-1 RTS/ALD features of the scene (Table S2 columns), GeoParquet under level1/year=YYYY/.",
)
def level1_scene_features(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_level1_features(storage, scene_id))


def write_level1_features(storage: StorageRoot, scene_id: str) -> MaterializeResult:
    cleaning, products = CleaningParams(), ProductParams()
    with failing_scene(scene_id):
        mask, grid, _ = read_raster(storage, scene_id, "cleaned_mask.tif")
        item = json.loads(storage.path(SCENES_FOLDER, scene_id, "item.json").read_text())
        acquired = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
        polygons = polygonise(mask.astype(bool), grid.transform, grid.crs, connectivity=cleaning.connectivity)
        features = level1_features(polygons, scene_id, acquired.date(), products, cleaning.threshold)
        parts = (LEVEL1_FOLDER, f"year={acquired.year}", f"{scene_id}.parquet")
        with storage.atomic_output(*parts) as local:
            write_level1(features, local)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(storage.path(*parts))),
            "features": len(features),
            "area_ha": float(features["area_ha"].sum()),
            "dagster/row_count": len(features),
        }
    )


PREDICTION_ASSETS = [*PROBABILITY_ASSETS, ensemble_probability, cleaned_mask, level1_scene_features]
