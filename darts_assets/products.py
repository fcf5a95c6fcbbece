"""Product assets (design stage 11): the six DARTS files, GeoParquet + GeoPackage, under ``<root>/products/``.

Each product reads the per-scene or per-year GeoParquet of its upstream assets from storage (through DuckDB),
builds the product with ``darts_core`` and publishes both files atomically. The year range in the file name is
the observation period (years with coverage), so a year without detections still counts. A product file of the
same kind with another year range (left from an earlier run) is removed once the new one is in place, so
readers of ``products/*_<what>_*_<level>.parquet`` always find exactly one.
"""

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
from dagster import AllPartitionMapping, AssetDep, AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue
from dagster import asset as dagster_asset

from darts_assets.annual import (
    COVERAGE_FOLDER,
    COVERAGE_LEVEL1_FILE,
    COVERAGE_LEVEL2_FILE,
    LEVEL2_FILE,
    LEVEL2_FOLDER,
    annual_coverage,
    annual_level2,
)
from darts_assets.metadata import png_markdown
from darts_assets.pictures import level2_map_png
from darts_assets.predictions import LEVEL1_FOLDER, level1_scene_features
from darts_core.coverage import coverage_intersect, coverage_union
from darts_core.level1 import LEVEL1_COLUMNS, LONLAT_CRS
from darts_core.params import ProductParams, as_metadata
from darts_core.products import PRODUCT_KINDS, product_name, write_product
from darts_core.products_catalogue import CATALOGUE_FILE, ProductFile, write_products_catalogue
from resources.duckdb import DartsDuckDB
from resources.storage import StorageRoot

PRODUCTS_FOLDER = "products"
ALL_PARTITIONS = AllPartitionMapping()
Build = Callable[[StorageRoot, DartsDuckDB, ProductParams], tuple[gpd.GeoDataFrame, list[int]]]


def read_files(storage: StorageRoot, duckdb: DartsDuckDB, folder: tuple[str, ...], pattern: str) -> gpd.GeoDataFrame:
    """Every GeoParquet file matching ``<folder>/<pattern>`` (e.g. ``year=*/x.parquet``) as one frame."""
    directory = storage.path(*folder)
    files = sorted(str(path) for path in directory.glob(pattern)) if directory.exists() else []
    if not files:
        return gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=LONLAT_CRS), crs=LONLAT_CRS)
    return duckdb.read_geoparquet(files)


def observed_years(storage: StorageRoot, duckdb: DartsDuckDB) -> list[int]:
    """The product period: years with at least one image in the coverage or with Level-1 features."""
    coverage = yearly_coverage(storage, duckdb)
    years = {int(year) for year in coverage.loc[coverage["num_images"] > 0, "year"]} if len(coverage) else set()
    level1 = storage.path(LEVEL1_FOLDER)
    if level1.exists():
        years |= {int(folder.name.removeprefix("year=")) for folder in level1.glob("year=*") if any(folder.iterdir())}
    return sorted(years)


def yearly_coverage(storage: StorageRoot, duckdb: DartsDuckDB) -> gpd.GeoDataFrame:
    frame = read_files(storage, duckdb, (COVERAGE_FOLDER, "level2"), f"year=*/{COVERAGE_LEVEL2_FILE}")
    return frame.sort_values("year", ignore_index=True) if len(frame) else frame


def renumbered(frame: gpd.GeoDataFrame, order: list[str]) -> gpd.GeoDataFrame:
    """Rows sorted by ``order`` with ``id`` = 0..n-1 (unique over the whole product)."""
    frame = frame.sort_values(order, kind="stable", ignore_index=True)
    frame["id"] = np.arange(len(frame), dtype=np.int64)
    return frame


def build_level1(storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams) -> tuple[gpd.GeoDataFrame, list]:
    frame = read_files(storage, duckdb, (LEVEL1_FOLDER,), "year=*/*.parquet")
    if len(frame):
        frame = renumbered(frame, ["year", "date", "image_id", "id"])[list(LEVEL1_COLUMNS)]
    return frame, observed_years(storage, duckdb)


def build_level2(storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams) -> tuple[gpd.GeoDataFrame, list]:
    frame = read_files(storage, duckdb, (LEVEL2_FOLDER,), f"year=*/{LEVEL2_FILE}")
    if len(frame):
        frame = renumbered(frame, ["year", "id"])
    return frame, observed_years(storage, duckdb)


def build_coverage_level1(
    storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams
) -> tuple[gpd.GeoDataFrame, list]:
    frame = read_files(storage, duckdb, (COVERAGE_FOLDER, "level1"), f"year=*/{COVERAGE_LEVEL1_FILE}")
    if len(frame):
        frame = frame.sort_values(["year", "date", "image_id"], ignore_index=True)
    return frame, observed_years(storage, duckdb)


def build_coverage_level2(
    storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams
) -> tuple[gpd.GeoDataFrame, list]:
    coverage = yearly_coverage(storage, duckdb)
    return coverage[coverage["num_images"] > 0].reset_index(drop=True), observed_years(storage, duckdb)


def build_coverage_union(
    storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams
) -> tuple[gpd.GeoDataFrame, list]:
    coverage, years = build_coverage_level2(storage, duckdb, params)
    return coverage_union(coverage, params), years


def build_coverage_intersect(
    storage: StorageRoot, duckdb: DartsDuckDB, params: ProductParams
) -> tuple[gpd.GeoDataFrame, list]:
    coverage, _ = build_coverage_level2(storage, duckdb, params)
    first, last = params.core_period
    return coverage_intersect(coverage, params.core_period, params), list(range(first, last + 1))


def publish(storage: StorageRoot, frame: gpd.GeoDataFrame, name: str, kind: str) -> dict[str, str]:
    """Write ``<name>.parquet`` and ``<name>.gpkg`` under ``products/``; drop files of ``kind`` with other names."""
    with tempfile.TemporaryDirectory(prefix="darts-product-") as temp_dir:
        written = write_product(frame, Path(temp_dir), name)
        for local in written:
            with storage.atomic_output(PRODUCTS_FOLDER, local.name) as target:
                shutil.copyfile(local, target)
    remove_stale(storage, name, kind)
    return {suffix: str(storage.path(PRODUCTS_FOLDER, f"{name}.{suffix}")) for suffix in ("parquet", "gpkg")}


def remove_stale(storage: StorageRoot, name: str, kind: str) -> None:
    what, level = kind.split("_", 1)
    folder = storage.path(PRODUCTS_FOLDER)
    for path in folder.glob(f"*_{what}_*_{level}.*"):
        if path.suffix in (".parquet", ".gpkg", ".json") and path.stem != name:
            path.unlink()


def product_metadata(frame: gpd.GeoDataFrame, paths: dict[str, str], params: ProductParams) -> dict:
    bounds = [round(float(value), 6) for value in frame.total_bounds] if len(frame) else None
    return {
        "path": MetadataValue.path(paths["parquet"]),
        "geopackage": MetadataValue.path(paths["gpkg"]),
        "dagster/row_count": len(frame),
        "columns": MetadataValue.json(list(frame.columns)),
        "bbox": MetadataValue.json(bounds),
        "parameters": MetadataValue.json(as_metadata(params)),
    }


def product_asset(kind: str, asset_name: str, deps: list, build: Build, description: str):
    """The asset that builds product ``kind`` with ``build`` and publishes it (group ``products``)."""

    @dagster_asset(
        name=asset_name,
        deps=deps,
        group_name="products",
        kinds={"geoparquet", "gpkg"},
        description=description,
    )
    def _product(context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB) -> MaterializeResult:
        params = ProductParams()
        frame, years = build(storage, duckdb, params)
        if not years:
            raise ValueError(f"{asset_name}: no coverage in any year yet: materialise annual_coverage first")
        name = product_name(params, kind, years)
        paths = publish(storage, frame, name, kind)
        context.log.info(f"{name}: {len(frame)} rows")
        metadata = product_metadata(frame, paths, params)
        if kind == "features_level2":
            coverage = yearly_coverage(storage, duckdb)
            metadata["map"] = png_markdown(level2_map_png(frame, coverage, params), "Level-2 features per year")
        return MaterializeResult(metadata=metadata)

    return _product


ALL_SCENES_AND_YEARS = [
    AssetDep(level1_scene_features, partition_mapping=ALL_PARTITIONS),
    AssetDep(annual_coverage, partition_mapping=ALL_PARTITIONS),
]
ALL_LEVEL2_YEARS = [
    AssetDep(annual_level2, partition_mapping=ALL_PARTITIONS),
    AssetDep(annual_coverage, partition_mapping=ALL_PARTITIONS),
]
ALL_COVERAGE_YEARS = [AssetDep(annual_coverage, partition_mapping=ALL_PARTITIONS)]

# kind, asset name, upstream, builder, description
PRODUCT_DEFINITIONS = (
    ("features_level1", "level1_product", ALL_SCENES_AND_YEARS, build_level1,
     "Level-1 product (Table S2): every scene's RTS/ALD features, ids unique over the product."),
    ("features_level2", "level2_product", ALL_LEVEL2_YEARS, build_level2,
     "Level-2 product (Table S3): the annual Level-2 features of every year, with a map per year."),
    ("coverage_level1", "coverage_level1_product", ALL_COVERAGE_YEARS, build_coverage_level1,
     "Coverage Level 1: the valid-data footprint of every image."),
    ("coverage_level2", "coverage_level2_product", ALL_COVERAGE_YEARS, build_coverage_level2,
     "Coverage Level 2: per year, the union of the image footprints."),
    ("coverage_union", "coverage_union_product", ALL_COVERAGE_YEARS, build_coverage_union,
     "Coverage union: the area covered at least once."),
    ("coverage_intersect", "coverage_intersect_product", ALL_COVERAGE_YEARS, build_coverage_intersect,
     "Coverage intersect: the area covered in every year of the core period (ProductParams.core_period)."),
)  # fmt: skip
PRODUCT_FILE_ASSETS = [product_asset(*definition) for definition in PRODUCT_DEFINITIONS]


def published_product(storage: StorageRoot, kind: str) -> tuple[str, tuple[int, int]]:
    """The name and year range of the one published GeoParquet file of ``kind``."""
    what, level = kind.split("_", 1)
    folder = storage.path(PRODUCTS_FOLDER)
    names = sorted(path.stem for path in folder.glob(f"*_{what}_*_{level}.parquet")) if folder.exists() else []
    if len(names) != 1:
        raise FileNotFoundError(f"expected one {kind} product in {folder}, found {names or 'none'}")
    first, last = re.fullmatch(rf".+_{what}_(\d{{4}})-(\d{{4}})_{level}", names[0]).groups()
    return names[0], (int(first), int(last))


@dagster_asset(
    deps=[*PRODUCT_FILE_ASSETS, AssetKey("validation_metrics")],  # its blocking floor check gates the catalogue
    group_name="products",
    kinds={"stac", "json"},
    description="Static STAC catalogue of the product files (products/catalog.json, one item per product, "
    "table and projection extensions).",
)
def products_catalogue(context: AssetExecutionContext, storage: StorageRoot) -> MaterializeResult:
    params = ProductParams()
    descriptions = {
        kind: definition.descriptions_by_key[definition.key]
        for kind, definition in zip(PRODUCT_KINDS, PRODUCT_FILE_ASSETS, strict=True)
    }
    with tempfile.TemporaryDirectory(prefix="darts-catalogue-") as temp_dir:
        folder, products = Path(temp_dir), []
        for kind in PRODUCT_KINDS:
            name, years = published_product(storage, kind)
            local = folder / f"{name}.parquet"
            with storage.local_input(PRODUCTS_FOLDER, local.name) as source:
                shutil.copyfile(source, local)
            products.append(ProductFile(name, years, local, descriptions[kind]))
        write_products_catalogue(folder, params.dataset_name, params.dataset_version, products)
        for document in [*(folder / f"{product.name}.json" for product in products), folder / CATALOGUE_FILE]:
            with storage.atomic_output(PRODUCTS_FOLDER, document.name) as target:
                shutil.copyfile(document, target)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(storage.path(PRODUCTS_FOLDER, CATALOGUE_FILE))),
            "items": MetadataValue.json([product.name for product in products]),
        }
    )


PRODUCT_ASSETS = [*PRODUCT_FILE_ASSETS, products_catalogue]
