"""Atomic writers shared by the demo-region modules: tiled deflate GeoTIFFs and GeoPackage layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine

from darts_core.atomic import atomic_path


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] = (),
    tags: dict[str, str] | None = None,
    block: int = 256,
) -> None:
    """A tiled, deflate-compressed GeoTIFF (band descriptions and tags set), written atomically."""
    data = data[None] if data.ndim == 2 else data
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
        crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
        compress="deflate", predictor=3 if data.dtype.kind == "f" else 2,
    )
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions, start=1):
            dst.set_band_description(i, name)
        if tags:
            dst.update_tags(**tags)


def write_gpkg(path: Path, frame: gpd.GeoDataFrame) -> None:
    """One GeoPackage layer named after the file, written atomically."""
    with atomic_path(path) as tmp:
        frame.to_file(tmp, driver="GPKG", layer=path.stem)
