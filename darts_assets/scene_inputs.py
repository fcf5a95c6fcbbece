"""Per-scene model inputs: the ingested Planet scene, auxiliary layers on its grid, the input stack.

Each asset reads what its parents wrote under ``scenes/<id>/`` of the storage root, calls darts_core,
writes its own GeoTIFF or GeoParquet atomically and attaches metadata. Bad input fails the one scene
partition with a message naming the scene and file.
"""

import json
import time
from contextlib import ExitStack

import geopandas as gpd
import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from darts_assets.batching import SCENE_BACKFILL_POLICY, materialize_scenes
from darts_assets.metadata import png_markdown
from darts_assets.scenes import SCENES_FOLDER, failing_scene, planet_scene_item
from darts_core.params import StackParams, TerrainParams, as_metadata
from darts_core.planet import PlanetScene, read_metadata, read_planet_assets
from darts_core.planet_catalogue import PlanetAssets
from darts_core.rasters import Grid, write_geotiff
from darts_core.scene_inputs import verify_scene_item
from darts_core.stack import AUX_BANDS, TCVIS_BANDS, read_quicklook_bands, stack_quicklook_png, write_stack_by_blocks
from partitions import scene_partitions
from resources.aux_sources import AuxLayerSource
from resources.storage import StorageRoot

FOOTPRINTS_FOLDER = "footprints"


def catalogued_assets(storage: StorageRoot, scene_id: str) -> PlanetAssets:
    """The scene's files, from the item written by ``planet_scene_item`` (checked again on read)."""
    item = json.loads(storage.path(SCENES_FOLDER, scene_id, "item.json").read_text())
    return verify_scene_item(item).assets


def scene_grid(storage: StorageRoot, scene_id: str) -> Grid:
    return Grid.from_raster(catalogued_assets(storage, scene_id).sr)


def write_scene_raster(
    storage: StorageRoot, scene_id: str, name: str, data: np.ndarray, grid: Grid, bands, nodata=None, tags=None
) -> str:
    with storage.atomic_output(SCENES_FOLDER, scene_id, name) as local:
        write_geotiff(local, data, grid, bands, nodata=nodata, tags=tags)
    return str(storage.path(SCENES_FOLDER, scene_id, name))


def layer_statistics(layer: np.ndarray) -> dict[str, float]:
    finite = layer[np.isfinite(layer)]
    if finite.size == 0:
        return {"finite_fraction": 0.0}
    return {
        "min": float(finite.min()),
        "mean": float(finite.mean()),
        "max": float(finite.max()),
        "finite_fraction": float(finite.size / layer.size),
    }


@asset(
    partitions_def=scene_partitions,
    deps=[planet_scene_item],
    group_name="scene_inputs",
    kinds={"geotiff", "geoparquet"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Ingested Planet scene: valid-pixel mask (udm2/UDM and nodata) and valid-data footprint.",
)
def planet_scene(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: ingest_planet_scene(storage, scene_id))


def ingest_planet_scene(storage: StorageRoot, scene_id: str) -> MaterializeResult:
    with failing_scene(scene_id):
        scene = read_planet_assets(catalogued_assets(storage, scene_id))
        grid = Grid(scene.crs, scene.transform, scene.width, scene.height)
        mask_path = write_scene_raster(
            storage, scene_id, "valid_mask.tif", scene.valid.astype(np.uint8), grid, ["valid"], nodata=None
        )
        footprint_path = write_footprint(storage, scene)
    return MaterializeResult(
        metadata={
            "acquired": scene.acquired.isoformat(),
            "valid_fraction": scene.valid_fraction,
            "mask_kind": scene.mask_kind,
            "warning": scene.warning or "",
            "footprint_area_km2": scene.footprint.area / 1e6,
            "valid_mask": MetadataValue.path(mask_path),
            "footprint": MetadataValue.path(footprint_path),
        }
    )


def write_footprint(storage: StorageRoot, scene: PlanetScene) -> str:
    """The valid-data footprint as one GeoParquet row (EPSG:4326), hive-partitioned by year."""
    year = scene.acquired.year
    frame = gpd.GeoDataFrame(
        {
            "image_id": [scene.item_id],
            "item_type": [scene.item_type],
            "date": [scene.acquired.date()],
            "year": [year],
            "valid_fraction": [scene.valid_fraction],
        },
        geometry=[scene.footprint],
        crs=scene.crs,
    ).to_crs("EPSG:4326")
    parts = (FOOTPRINTS_FOLDER, f"year={year}", f"{scene.item_id}.parquet")
    with storage.atomic_output(*parts) as local:
        frame.to_parquet(local, schema_version="1.1.0", write_covering_bbox=True)
    return str(storage.path(*parts))


@asset(
    partitions_def=scene_partitions,
    deps=[planet_scene_item],
    group_name="scene_inputs",
    kinds={"geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Relative elevation (DEM minus its disk mean) and Horn slope, on the scene grid.",
)
def scene_terrain(
    context: AssetExecutionContext, storage: StorageRoot, aux_layers: AuxLayerSource
) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_scene_terrain(storage, aux_layers, scene_id))


def write_scene_terrain(storage: StorageRoot, aux_layers: AuxLayerSource, scene_id: str) -> MaterializeResult:
    params = TerrainParams()
    with failing_scene(scene_id):
        grid = scene_grid(storage, scene_id)
        relative_elevation, slope = aux_layers.terrain(grid, params)
        tags = {"darts_terrain_params": as_metadata(params), "source": aux_layers.describe()}
        path = write_scene_raster(
            storage, scene_id, "terrain.tif", np.stack([relative_elevation, slope]), grid, AUX_BANDS, np.nan, tags
        )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(path),
            "parameters": MetadataValue.json(as_metadata(params)),
            "source": MetadataValue.json(aux_layers.describe()),
            "relative_elevation_m": MetadataValue.json(layer_statistics(relative_elevation)),
            "slope_deg": MetadataValue.json(layer_statistics(slope)),
        }
    )


@asset(
    partitions_def=scene_partitions,
    deps=[planet_scene_item],
    group_name="scene_inputs",
    kinds={"geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Landsat Tasseled-Cap trends (TCVIS brightness, greenness, wetness), nearest, on the scene grid.",
)
def scene_tcvis(context: AssetExecutionContext, storage: StorageRoot, aux_layers: AuxLayerSource) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_scene_tcvis(storage, aux_layers, scene_id))


def write_scene_tcvis(storage: StorageRoot, aux_layers: AuxLayerSource, scene_id: str) -> MaterializeResult:
    with failing_scene(scene_id):
        grid = scene_grid(storage, scene_id)
        tcvis = aux_layers.tcvis(grid)
        path = write_scene_raster(
            storage, scene_id, "tcvis.tif", tcvis, grid, TCVIS_BANDS, tags={"source": aux_layers.describe()}
        )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(path),
            "source": MetadataValue.json(aux_layers.describe()),
            "band_means": MetadataValue.json(dict(zip(TCVIS_BANDS, map(float, tcvis.mean(axis=(1, 2))), strict=True))),
        }
    )


@asset(
    partitions_def=scene_partitions,
    deps=[planet_scene_item],
    group_name="scene_inputs",
    kinds={"geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="Water mask from land cover (the source's water classes), on the scene grid.",
)
def scene_water_mask(
    context: AssetExecutionContext, storage: StorageRoot, aux_layers: AuxLayerSource
) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_scene_water_mask(storage, aux_layers, scene_id))


def write_scene_water_mask(storage: StorageRoot, aux_layers: AuxLayerSource, scene_id: str) -> MaterializeResult:
    with failing_scene(scene_id):
        grid = scene_grid(storage, scene_id)
        water = aux_layers.water_mask(grid)  # the source's own water classes (legends differ)
        tags = {"source": aux_layers.describe()}
        path = write_scene_raster(
            storage, scene_id, "water_mask.tif", water.astype(np.uint8), grid, ["water"], tags=tags
        )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(path),
            "water_fraction": float(water.mean()),
            "source": MetadataValue.json(aux_layers.describe()),
        }
    )


@asset(
    partitions_def=scene_partitions,
    deps=[planet_scene, scene_terrain, scene_tcvis],
    group_name="scene_inputs",
    kinds={"geotiff"},
    description="Normalised 10-band model input (ndvi, B, G, R, NIR, rel. elevation, slope, TCVIS); "
    "the notcvis model reads its first 7 bands.",
    backfill_policy=SCENE_BACKFILL_POLICY,
)
def input_stack(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: write_input_stack(storage, scene_id))


def write_input_stack(storage: StorageRoot, scene_id: str) -> MaterializeResult:
    params = StackParams()
    started = time.perf_counter()
    with failing_scene(scene_id):
        assets = catalogued_assets(storage, scene_id)
        _, _, acquired = read_metadata(assets.metadata, scene_id)
        tags = {"scene": scene_id, "acquired": acquired.isoformat()}
        with ExitStack() as inputs:
            terrain = inputs.enter_context(storage.local_input(SCENES_FOLDER, scene_id, "terrain.tif"))
            tcvis = inputs.enter_context(storage.local_input(SCENES_FOLDER, scene_id, "tcvis.tif"))
            local = inputs.enter_context(storage.atomic_output(SCENES_FOLDER, scene_id, "input_stack.tif"))
            valid_fraction = write_stack_by_blocks(assets, terrain, tcvis, local, params, tags)
            quicklook = stack_quicklook_png(read_quicklook_bands(local), params.bands)
            grid = Grid.from_raster(str(local))
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(storage.path(SCENES_FOLDER, scene_id, "input_stack.tif"))),
            "bands": MetadataValue.json(list(params.bands)),
            "normalisation": MetadataValue.json({k: as_metadata(v) for k, v in params.normalisation.items()}),
            "shape": MetadataValue.json([len(params.bands), *grid.shape]),
            "valid_fraction": valid_fraction,
            "timings": MetadataValue.json({"total_s": time.perf_counter() - started}),
            "quicklook": png_markdown(quicklook, scene_id),
        }
    )


SCENE_INPUT_ASSETS = [planet_scene, scene_terrain, scene_tcvis, scene_water_mask, input_stack]
