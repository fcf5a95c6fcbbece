"""Writing analysis rasters: tiled, compressed GeoTIFFs with band names and tags, written atomically."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from darts_core.atomic import atomic_path

BLOCK_SIZE = 256


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        west, south, east, north = rasterio.transform.array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)

    @classmethod
    def of_raster(cls, path: str | Path) -> Grid:
        with rasterio.open(path) as source:
            return cls(source.crs.to_string(), source.transform, source.width, source.height)


def geotiff_profile(grid: Grid, count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    predictor = 3 if np.dtype(dtype).kind == "f" else 2
    return {
        "driver": "GTiff",
        "crs": grid.crs,
        "transform": grid.transform,
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": "deflate",
        "predictor": predictor,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }


def write_geotiff(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    band_names: Sequence[str],
    nodata: float | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Write ``data`` (bands, rows, cols) or (rows, cols) atomically; tags that are not strings become JSON."""
    bands = data if data.ndim == 3 else data[np.newaxis]
    if bands.shape[1:] != grid.shape or len(band_names) != bands.shape[0]:
        raise ValueError(f"{path.name}: array {bands.shape} does not match grid {grid.shape} / bands {band_names}")
    profile = geotiff_profile(grid, bands.shape[0], bands.dtype.name, nodata)
    with atomic_path(path) as temp_path, rasterio.open(temp_path, "w", **profile) as sink:
        for index, (band, name) in enumerate(zip(bands, band_names, strict=True), start=1):
            sink.write(band, index)
            sink.set_band_description(index, name)
        sink.update_tags(**{key: as_tag(value) for key, value in (tags or {}).items()})


def as_tag(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
