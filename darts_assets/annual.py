"""Year-partitioned assets (design stages 9-10): Level-2 features and coverage of one calendar year.

They depend on every scene partition (``AllPartitionMapping``: the UI shows the lineage) but read their inputs
from storage, the hive-partitioned GeoParquet ``level1/year=YYYY/`` and ``footprints/year=YYYY/`` written by the
scene assets, through DuckDB. A year without scenes gives empty (typed) files.
"""

import geopandas as gpd
from dagster import AllPartitionMapping, AssetDep, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from darts_assets.predictions import LEVEL1_FOLDER, level1_scene_features
from darts_assets.scene_inputs import FOOTPRINTS_FOLDER, planet_scene
from darts_core.coverage import COVERAGE_LEVEL1_COLUMNS, coverage_level1, coverage_level2
from darts_core.level1 import LONLAT_CRS
from darts_core.level2 import level2_features
from darts_core.params import ProductParams, as_metadata
from partitions import year_partitions
from resources.duckdb import DartsDuckDB
from resources.storage import StorageRoot

LEVEL2_FOLDER = "level2"
COVERAGE_FOLDER = "coverage"
LEVEL2_FILE = "level2_features.parquet"
COVERAGE_LEVEL1_FILE = "coverage_level1.parquet"
COVERAGE_LEVEL2_FILE = "coverage_level2.parquet"


def year_folder(folder: str, year: int | str) -> tuple[str, str]:
    return folder, f"year={int(year)}"


def read_year(storage: StorageRoot, duckdb: DartsDuckDB, folder: str, year: int | str) -> gpd.GeoDataFrame:
    """All GeoParquet files of ``<folder>/year=YYYY/`` as one frame (empty, without columns, when there are none)."""
    directory = storage.path(*year_folder(folder, year))
    files = sorted(str(path) for path in directory.glob("*.parquet")) if directory.exists() else []
    if not files:
        return gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=LONLAT_CRS), crs=LONLAT_CRS)
    return duckdb.read_geoparquet(files)


def write_year_file(storage: StorageRoot, frame: gpd.GeoDataFrame, *parts: str) -> str:
    """``frame`` as GeoParquet 1.1 (bbox covering) at ``parts``, atomically; returns the path."""
    with storage.atomic_output(*parts) as local:
        frame.to_parquet(local, index=False, schema_version="1.1.0", write_covering_bbox=True)
    return str(storage.path(*parts))


def empty_coverage_level1() -> gpd.GeoDataFrame:
    columns = {name: [] for name in COVERAGE_LEVEL1_COLUMNS[:-1]}
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=LONLAT_CRS), crs=LONLAT_CRS)
    return frame.astype({"image_id": "string", "date": "string", "year": "int64", "area_km2": "float64"})


@asset(
    partitions_def=year_partitions,
    deps=[AssetDep(level1_scene_features, partition_mapping=AllPartitionMapping())],
    group_name="annual",
    kinds={"geoparquet", "duckdb"},
    description="Level-2 features of one year (Table S3): the year's Level-1 features dissolved into connected "
    "groups, with num_observations and earliest/latest date. GeoParquet level2/year=YYYY/.",
)
def annual_level2(context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB) -> MaterializeResult:
    year, params = context.partition_key, ProductParams()
    level1 = read_year(storage, duckdb, LEVEL1_FOLDER, year)
    level2 = level2_features(level1, params)
    path = write_year_file(storage, level2, *year_folder(LEVEL2_FOLDER, year), LEVEL2_FILE)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(path),
            "dagster/row_count": len(level2),
            "level1_features": len(level1),
            "level1_images": int(level1["image_id"].nunique()) if len(level1) else 0,
            "area_km2": float(level2["area_m2"].sum()) / 1e6,
            "parameters": MetadataValue.json(as_metadata(params)),
        }
    )


@asset(
    partitions_def=year_partitions,
    deps=[AssetDep(planet_scene, partition_mapping=AllPartitionMapping())],
    group_name="annual",
    kinds={"geoparquet", "duckdb"},
    description="Coverage of one year: each image's valid-data footprint (coverage Level 1, one row per image) and "
    "their union (coverage Level 2). GeoParquet coverage/level1|level2/year=YYYY/.",
)
def annual_coverage(context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB) -> MaterializeResult:
    year, params = context.partition_key, ProductParams()
    footprints = read_year(storage, duckdb, FOOTPRINTS_FOLDER, year)
    per_image = coverage_level1(footprints, params, params.coverage_simplify_m) if len(footprints) else None
    per_image = empty_coverage_level1() if per_image is None else per_image
    per_year = coverage_level2(per_image, params)
    level1_path = write_year_file(
        storage, per_image, COVERAGE_FOLDER, "level1", f"year={int(year)}", COVERAGE_LEVEL1_FILE
    )
    level2_path = write_year_file(
        storage, per_year, COVERAGE_FOLDER, "level2", f"year={int(year)}", COVERAGE_LEVEL2_FILE
    )
    return MaterializeResult(
        metadata={
            "coverage_level1": MetadataValue.path(level1_path),
            "coverage_level2": MetadataValue.path(level2_path),
            "images": len(per_image),
            "dagster/row_count": len(per_image),
            "area_km2": float(per_year["area_km2"].sum()) if len(per_year) else 0.0,
            "parameters": MetadataValue.json(as_metadata(params)),
        }
    )


ANNUAL_ASSETS = [annual_level2, annual_coverage]
