"""Asset checks of the products: schema and geometry validity of every product file, Level 1 <-> Level 2."""

import geopandas as gpd
from dagster import AssetCheckResult, AssetChecksDefinition, MetadataValue, asset_check

from darts_assets.products import PRODUCT_FILE_ASSETS, PRODUCTS_FOLDER, published_product
from darts_core.coverage import (
    COVERAGE_INTERSECT_COLUMNS,
    COVERAGE_LEVEL1_COLUMNS,
    COVERAGE_LEVEL2_COLUMNS,
    COVERAGE_UNION_COLUMNS,
)
from darts_core.level1 import LEVEL1_COLUMNS
from darts_core.level2 import LEVEL2_COLUMNS
from darts_core.products import PRODUCT_KINDS
from resources.storage import StorageRoot

PRODUCT_COLUMNS = {
    "features_level1": LEVEL1_COLUMNS,
    "features_level2": LEVEL2_COLUMNS,
    "coverage_level1": COVERAGE_LEVEL1_COLUMNS,
    "coverage_level2": COVERAGE_LEVEL2_COLUMNS,
    "coverage_union": COVERAGE_UNION_COLUMNS,
    "coverage_intersect": COVERAGE_INTERSECT_COLUMNS,
}
AREA_TOLERANCE = 1e-9  # relative: Level-2 area may exceed the summed Level-1 area only by rounding


def read_published(storage: StorageRoot, kind: str) -> gpd.GeoDataFrame:
    name, _ = published_product(storage, kind)
    with storage.local_input(PRODUCTS_FOLDER, f"{name}.parquet") as path:
        return gpd.read_parquet(path)


def schema_problems(frame: gpd.GeoDataFrame, kind: str) -> list[str]:
    """What is wrong with a product's columns, CRS and geometries (empty list: nothing)."""
    problems = []
    if tuple(frame.columns) != PRODUCT_COLUMNS[kind]:
        problems.append(f"columns {list(frame.columns)} != {list(PRODUCT_COLUMNS[kind])}")
    if frame.crs is None or frame.crs.to_epsg() != 4326:
        problems.append(f"CRS {frame.crs} is not EPSG:4326")
    invalid = int((~frame.geometry.is_valid).sum())
    if invalid:
        problems.append(f"{invalid} invalid geometries")
    if kind != "coverage_intersect" and frame.geometry.is_empty.any():
        problems.append(f"{int(frame.geometry.is_empty.sum())} empty geometries")
    return problems


def product_schema_check(kind: str, product_asset) -> AssetChecksDefinition:
    @asset_check(
        asset=product_asset,
        name="schema_and_geometry",
        description=f"The {kind} product has the design's columns in order, EPSG:4326 and valid geometries.",
    )
    def _check(storage: StorageRoot) -> AssetCheckResult:
        frame = read_published(storage, kind)
        problems = schema_problems(frame, kind)
        return AssetCheckResult(passed=not problems, metadata={"problems": MetadataValue.json(problems)})

    return _check


def level_consistency(level1: gpd.GeoDataFrame, level2: gpd.GeoDataFrame) -> dict[str, object]:
    """Per year: Level-2 observations vs Level-1 features, Level-2 vs summed Level-1 area (m²)."""
    count1, count2 = level1.groupby("year").size(), level2.groupby("year")["num_observations"].sum()
    area1, area2 = level1.groupby("year")["area_m2"].sum(), level2.groupby("year")["area_m2"].sum()
    years = sorted(set(count1.index) | set(count2.index))
    mismatched = [int(year) for year in years if count1.get(year, 0) != count2.get(year, 0)]
    too_large = [int(year) for year in years if area2.get(year, 0.0) > area1.get(year, 0.0) * (1 + AREA_TOLERANCE)]
    return {"observation_mismatch_years": mismatched, "area_exceeds_level1_years": too_large}


@asset_check(
    asset="level2_product",
    description="Level 1 <-> Level 2: per year, num_observations sums to the Level-1 count and the Level-2 area "
    "is at most the summed Level-1 area.",
    additional_deps=["level1_product"],
)
def level1_level2_consistency(storage: StorageRoot) -> AssetCheckResult:
    found = level_consistency(read_published(storage, "features_level1"), read_published(storage, "features_level2"))
    passed = not any(found.values())
    return AssetCheckResult(passed=passed, metadata={name: MetadataValue.json(value) for name, value in found.items()})


PRODUCT_CHECKS = [
    *(product_schema_check(kind, asset) for kind, asset in zip(PRODUCT_KINDS, PRODUCT_FILE_ASSETS, strict=True)),
    level1_level2_consistency,
]
