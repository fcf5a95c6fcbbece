"""Product files (design stage 11): names and the GeoParquet + GeoPackage pair of every product.

Names: ``<dataset>_features_<y0>-<y1>_level1|level2``, ``<dataset>_coverage_<y0>-<y1>_level1|level2|union`` and
``<dataset>_coverage_<c0>-<c1>_intersect`` (``<c0>-<c1>`` = the core period). Both files hold the same
features: GeoParquet 1.1 with a bbox covering column, GeoPackage with one layer named like the file; each is
written atomically, so a reader sees the previous or the new file, never a partial one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import numpy as np

from darts_core.atomic import atomic_path
from darts_core.level1 import LONLAT_CRS
from darts_core.params import ProductParams

PRODUCT_KINDS = (
    "features_level1",
    "features_level2",
    "coverage_level1",
    "coverage_level2",
    "coverage_union",
    "coverage_intersect",
)


def product_name(params: ProductParams, kind: str, years: Iterable[int]) -> str:
    """``<dataset>_<features|coverage>_<first>-<last year>_<level>``; ``kind`` is one of ``PRODUCT_KINDS``."""
    if kind not in PRODUCT_KINDS:
        raise ValueError(f"unknown product kind {kind!r}: expected one of {PRODUCT_KINDS}")
    years = sorted(int(year) for year in years)
    if not years:
        raise ValueError(f"product {kind} needs at least one year")
    family, level = kind.split("_")
    return f"{params.dataset_name}_{family}_{years[0]}-{years[-1]}_{level}"


def check_product(frame: gpd.GeoDataFrame) -> None:
    """Raise unless ``frame`` is in EPSG:4326 with valid geometries only (what the product builders return)."""
    if frame.crs is None or not frame.crs.equals(LONLAT_CRS):
        raise ValueError(f"products are written in {LONLAT_CRS}, got {frame.crs}")
    invalid = np.flatnonzero(~frame.geometry.is_valid.to_numpy())
    if len(invalid):
        raise ValueError(f"{len(invalid)} invalid geometries (rows {invalid[:5].tolist()}...)")


def write_product(frame: gpd.GeoDataFrame, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.parquet`` (GeoParquet 1.1, bbox covering) and ``<name>.gpkg`` (layer ``name``)."""
    check_product(frame)
    parquet_path, gpkg_path = Path(folder) / f"{name}.parquet", Path(folder) / f"{name}.gpkg"
    with atomic_path(parquet_path) as temp_path:
        frame.to_parquet(temp_path, index=False, schema_version="1.1.0", write_covering_bbox=True)
    with atomic_path(gpkg_path) as temp_path:
        temp_path.unlink()  # GDAL creates the GeoPackage itself (an empty file is not one)
        frame.to_file(
            temp_path, layer=name, driver="GPKG", engine="pyogrio", promote_to_multi=True, geometry_type="MultiPolygon"
        )
    return parquet_path, gpkg_path
