"""Terrain derivatives against GDAL's own slope and a brute-force disk mean, on real DEMs.

Data: Norwegian Polar Institute DEMs via GlacioHack/xdem and xdem-data (see ../shared/data/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from darts_core.params import TerrainParams
from darts_core.terrain import disk_kernel, disk_mean, relative_elevation, slope_horn

DEM_PIXEL_M = 20.0


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1, masked=True).astype(np.float64).filled(np.nan)


@pytest.fixture(scope="module")
def longyearbyen_dem(shared_data: Path) -> np.ndarray:
    """DEM_1995 (20 m) with two nodata holes: a block and a disk, so nodata and edges are both exercised."""
    dem = read_band(shared_data / "dem" / "DEM_1995.tif")
    dem[400:430, 600:660] = np.nan
    rows, cols = np.ogrid[: dem.shape[0], : dem.shape[1]]
    dem[(rows - 700) ** 2 + (cols - 200) ** 2 <= 15**2] = np.nan
    return dem


def brute_force_disk_mean(dem: np.ndarray, row: int, col: int, radius_px: float) -> float:
    """Mean of the finite pixels whose centres are within ``radius_px`` of (row, col): an explicit loop."""
    half = int(radius_px)
    total, count = 0.0, 0
    for d_row in range(-half, half + 1):
        for d_col in range(-half, half + 1):
            r, c = row + d_row, col + d_col
            inside = 0 <= r < dem.shape[0] and 0 <= c < dem.shape[1]
            if inside and d_row**2 + d_col**2 <= radius_px**2 and np.isfinite(dem[r, c]):
                total += dem[r, c]
                count += 1
    return total / count if count else np.nan


def sample_pixels(dem: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """~200 pixels: random interior, the four edges and corners, and the rims of the nodata holes."""
    height, width = dem.shape
    pixels = [(int(r), int(c)) for r, c in zip(rng.integers(0, height, 80), rng.integers(0, width, 80), strict=True)]
    pixels += [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)]
    pixels += [(int(r), 1) for r in rng.integers(0, height, 15)] + [(2, int(c)) for c in rng.integers(0, width, 15)]
    pixels += [(height - 3, int(c)) for c in rng.integers(0, width, 15)]
    pixels += [(int(r), width - 2) for r in rng.integers(0, height, 15)]
    nodata = np.isnan(dem)
    rim = np.argwhere(~nodata[1:-1, 1:-1] & (nodata[:-2, 1:-1] | nodata[2:, 1:-1] | nodata[1:-1, :-2]))
    pixels += [(int(r) + 1, int(c) + 1) for r, c in rim[rng.choice(len(rim), 50, replace=False)]]
    return pixels


@pytest.mark.parametrize("radius_m", [TerrainParams().tpi_radius_m, 250.0])
def test_relative_elevation_equals_brute_force_disk_mean(longyearbyen_dem, radius_m):
    relative = relative_elevation(longyearbyen_dem, DEM_PIXEL_M, radius_m)
    radius_px = radius_m / DEM_PIXEL_M
    pixels = sample_pixels(longyearbyen_dem, np.random.default_rng(42))
    assert len(pixels) >= 190
    for row, col in pixels:
        expected = longyearbyen_dem[row, col] - brute_force_disk_mean(longyearbyen_dem, row, col, radius_px)
        assert relative[row, col] == pytest.approx(expected, abs=1e-3), (row, col)
    assert np.isnan(relative[np.isnan(longyearbyen_dem)]).all()
    assert relative.dtype == np.float32


def test_disk_mean_of_constant_is_constant_and_nodata_is_excluded():
    values = np.full((60, 80), 7.25)
    valid = np.ones(values.shape, dtype=bool)
    valid[10:30, 20:50] = False
    values[~valid] = 1e6  # flagged invalid: must not leak into any mean
    values[40, 40] = np.nan  # NaN is invalid without a flag
    mean = disk_mean(values, 6.5, valid)
    assert np.allclose(mean[np.isfinite(mean)], 7.25, atol=1e-9)
    assert np.isfinite(mean).sum() == values.size - 8 * 18  # no valid pixel within 6.5 px of the hole's core


def test_disk_mean_of_nothing_valid_is_nan():
    assert np.isnan(disk_mean(np.full((5, 5), np.nan), 2.0)).all()


def test_disk_kernel_holds_the_pixel_centres_within_the_radius():
    assert disk_kernel(5.0).sum() == 81  # lattice points with x^2 + y^2 <= 25
    assert disk_kernel(0.5).sum() == 1


def test_slope_matches_gdaldem_horn(shared_data: Path):
    """GDAL's slope of a DEM given only shifted by one pixel: dem[r-1, c+1] = shifted[r, c]."""
    gdal = shared_data / "dem" / "gdal"
    shifted = read_band(gdal / "shifted_reprojected_xoff20.0_yoff20.0.tif")
    dem = np.full(shifted.shape, np.nan)
    dem[:-1, 1:] = shifted[1:, :-1]
    with rasterio.open(gdal / "slope_Horn.tif") as dataset:
        gdal_slope = dataset.read(1, masked=True).astype(np.float64).filled(np.nan)
        pixel_x, pixel_y = dataset.res
    slope = slope_horn(dem, pixel_x, pixel_y)
    compared = np.isfinite(gdal_slope) & np.isfinite(slope)
    assert compared.sum() >= 0.95 * np.isfinite(gdal_slope).sum()  # all but the unrecoverable row/column
    assert np.abs(slope - gdal_slope)[compared].max() <= 0.01
    assert np.isnan(slope[0]).all() and np.isnan(slope[:, -1]).all()  # gdaldem default: no edges
