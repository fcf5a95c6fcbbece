"""Auxiliary layers on scene grids: real WorldCover and DEM rasters, independent re-computations, bad inputs.

Data: ESA WorldCover 2020 (CC-BY-4.0); DEM_1995 by the Norwegian Polar Institute via GlacioHack/xdem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.transform import rowcol

from darts_core.aux_layers import (
    AuxCoverageError,
    AuxSourceError,
    Grid,
    ground_pixel_size_m,
    tcvis_on_grid,
    terrain_on_grid,
    water_mask_on_grid,
)
from darts_core.params import TerrainParams
from darts_core.terrain import relative_elevation, slope_horn

WORLDCOVER_WATER = 80
PARAMS = TerrainParams()


def write_raster(path: Path, bands: np.ndarray, crs: str, transform: Affine, nodata: float | None = None) -> str:
    bands = bands if bands.ndim == 3 else bands[None]
    profile = {"driver": "GTiff", "count": bands.shape[0], "dtype": bands.dtype.name, "crs": crs}
    profile |= {"transform": transform, "width": bands.shape[2], "height": bands.shape[1], "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(bands)
    return str(path)


@pytest.fixture(scope="module")
def worldcover(shared_data: Path) -> str:
    return str(shared_data / "landcover" / "ESA_WorldCover_10m_2020_v100_N66E177_Map.tif")


@pytest.fixture(scope="module")
def dem_path(shared_data: Path) -> str:
    return str(shared_data / "dem" / "DEM_1995.tif")


@pytest.fixture(scope="module")
def native_terrain(dem_path: str) -> tuple[np.ndarray, np.ndarray, Affine]:
    """Relative elevation and slope computed on the whole DEM at once (the reference)."""
    with rasterio.open(dem_path) as dataset:
        dem, transform = dataset.read(1).astype(np.float64), dataset.transform
    pixel = ground_pixel_size_m(dataset.crs, transform, dem.shape, dem_path)
    return relative_elevation(dem, pixel, PARAMS.tpi_radius_m), slope_horn(dem, pixel, pixel), transform


def keys_cubic(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Keys (a = -0.5) cubic convolution at fractional (row, col) positions of pixel centres: GDAL's cubic."""

    def weight(distance: np.ndarray) -> np.ndarray:
        t = np.abs(distance)
        return np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1, np.where(t < 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0))

    row0, col0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    result = np.zeros(rows.shape)
    for d_row in range(-1, 3):
        for d_col in range(-1, 3):
            taps = values[row0 + d_row, col0 + d_col]
            result += weight(rows - row0 - d_row) * weight(cols - col0 - d_col) * taps
    return result


def test_grid_from_raster_has_the_raster_bounds(dem_path):
    grid = Grid.from_raster(dem_path)
    with rasterio.open(dem_path) as dataset:
        assert grid.bounds == tuple(dataset.bounds) and grid.shape == dataset.shape
    assert grid.crs == "EPSG:25833"


def test_water_mask_on_utm_grid_matches_pixel_centre_lookup(worldcover: str):
    """WorldCover (EPSG:4326) onto a 20 m EPSG:32660 grid around 66.5 N 177.5 E, checked on every pixel."""
    centre_x, centre_y = Transformer.from_crs(4326, 32660, always_xy=True).transform(177.5, 66.5)
    grid = Grid("EPSG:32660", Affine(20, 0, round(centre_x) - 20_000, 0, -20, round(centre_y) + 20_000), 2000, 2000)
    mask = water_mask_on_grid(worldcover, grid, PARAMS.water_classes)

    rows, cols = np.mgrid[: grid.height, : grid.width]
    xs, ys = grid.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lons, lats = Transformer.from_crs(32660, 4326, always_xy=True).transform(xs, ys)
    with rasterio.open(worldcover) as dataset:
        classes = dataset.read(1)
        source_rows, source_cols = rowcol(dataset.transform, lons, lats)
    expected = (classes[source_rows, source_cols] == WORLDCOVER_WATER).reshape(grid.shape)

    assert expected.sum() > 5_000  # lakes and rivers, not a trivially dry scene
    assert (mask == expected).mean() >= 0.99
    assert mask[expected].mean() >= 0.99 and expected[mask].mean() >= 0.99
    assert mask.dtype == bool and mask.shape == grid.shape


def test_terrain_on_aligned_subgrid_equals_native_computation(dem_path, native_terrain):
    relative, slope, transform = native_terrain
    grid = Grid("EPSG:25833", transform @ Affine.translation(300, 200), 400, 300)
    relative_on_grid, slope_on_grid = terrain_on_grid(dem_path, grid, PARAMS)
    assert np.allclose(relative_on_grid, relative[200:500, 300:700], atol=1e-4)
    assert np.allclose(slope_on_grid, slope[200:500, 300:700], atol=1e-3)
    assert relative_on_grid.dtype == slope_on_grid.dtype == np.float32


def test_terrain_on_rotated_3m_utm_grid_is_native_terrain_resampled_cubic(dem_path, native_terrain):
    """A 17 degree rotated, shifted 3 m EPSG:32633 grid: equals Keys cubic sampling of the native layers."""
    relative, slope, dem_transform = native_terrain
    scene_transform = Affine.translation(512_000.5, 8_665_001.25) @ Affine.rotation(17) @ Affine.scale(3, -3)
    grid = Grid("EPSG:32633", scene_transform, 1500, 1200)
    relative_on_grid, slope_on_grid = terrain_on_grid(dem_path, grid, PARAMS)
    assert np.isfinite(relative_on_grid).all() and np.isfinite(slope_on_grid).all()

    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, grid.height, 500), rng.integers(0, grid.width, 500)
    xs, ys = Transformer.from_crs(32633, 25833, always_xy=True).transform(*(scene_transform @ (cols + 0.5, rows + 0.5)))
    dem_cols, dem_rows = ~dem_transform @ (np.asarray(xs), np.asarray(ys))
    expected_relative = keys_cubic(relative.astype(np.float64), dem_rows - 0.5, dem_cols - 0.5)
    expected_slope = keys_cubic(slope.astype(np.float64), dem_rows - 0.5, dem_cols - 0.5)
    assert np.abs(relative_on_grid[rows, cols] - expected_relative).max() < 1e-3  # metres
    assert np.abs(slope_on_grid[rows, cols] - expected_slope).max() < 1e-3  # degrees
    assert np.abs(relative_on_grid).max() > 5 and slope_on_grid.max() > 10  # real relief, not a flat layer


def test_dem_not_covering_the_grid_names_layer_file_and_bounds(dem_path):
    grid = Grid("EPSG:25833", Affine(3, 0, 600_000, 0, -3, 8_665_000), 100, 100)
    with pytest.raises(AuxCoverageError, match=r"DEM.*DEM_1995\.tif covers 0\.00% .*600000\.00"):
        terrain_on_grid(dem_path, grid, PARAMS)


def test_dem_covering_part_of_the_grid_fails_unless_allowed(dem_path):
    grid = Grid("EPSG:25833", Affine(3, 0, 528_000, 0, -3, 8_665_000), 1000, 300)  # DEM ends at x = 529450
    with pytest.raises(AuxCoverageError, match=r"DEM_1995\.tif covers 4\d\.\d\d% .*at least 100\.00%"):
        terrain_on_grid(dem_path, grid, PARAMS)
    relative, slope = terrain_on_grid(dem_path, grid, PARAMS, min_coverage=0.4)
    assert np.isfinite(relative[:, :400]).all() and np.isnan(relative[:, -400:]).all()
    assert np.isnan(slope[:, -400:]).all()


def test_dem_with_two_bands_is_rejected(tmp_path):
    path = write_raster(
        tmp_path / "two_band_dem.tif",
        np.ones((2, 50, 50), np.float32),
        "EPSG:32633",
        Affine(20, 0, 500_000, 0, -20, 7_000_000),
    )
    grid = Grid("EPSG:32633", Affine(3, 0, 500_300, 0, -3, 6_999_700), 10, 10)
    with pytest.raises(AuxSourceError, match=r"two_band_dem\.tif has 2 band\(s\); 1 expected"):
        terrain_on_grid(path, grid, PARAMS)


def test_geographic_dem_is_rejected(tmp_path):
    path = write_raster(
        tmp_path / "lonlat_dem.tif", np.ones((50, 50), np.float32), "EPSG:4326", Affine(0.001, 0, 15.0, 0, -0.001, 78.2)
    )
    grid = Grid("EPSG:32633", Affine(3, 0, 500_300, 0, -3, 8_680_000), 10, 10)
    with pytest.raises(AuxSourceError, match=r"lonlat_dem\.tif has a geographic CRS"):
        terrain_on_grid(path, grid, PARAMS)


def test_dem_buffer_smaller_than_the_disk_is_rejected(dem_path, native_terrain):
    grid = Grid("EPSG:25833", native_terrain[2] @ Affine.translation(300, 200), 40, 30)
    with pytest.raises(ValueError, match="dem_buffer_m"):
        terrain_on_grid(dem_path, grid, TerrainParams(dem_buffer_m=50.0))


@pytest.fixture
def small_tcvis(tmp_path) -> tuple[str, np.ndarray, Affine]:
    values = np.random.default_rng(3).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    transform = Affine(30, 0, 400_000, 0, -30, 7_500_000)
    return write_raster(tmp_path / "tcvis.tif", values, "EPSG:32660", transform), values, transform


def test_tcvis_on_grid_is_nearest_neighbour(small_tcvis):
    path, values, transform = small_tcvis
    grid = Grid("EPSG:32660", Affine(10, 0, 400_300, 0, -10, 7_499_700), 60, 45)  # 3x3 finer, inside
    tcvis = tcvis_on_grid(path, grid)
    assert tcvis.dtype == np.uint8 and tcvis.shape == (3, 45, 60)
    assert np.array_equal(tcvis, np.repeat(np.repeat(values[:, 10:25, 10:30], 3, axis=1), 3, axis=2))


def test_tcvis_partly_outside_and_wrong_bands_are_rejected(small_tcvis, tmp_path):
    path, values, transform = small_tcvis
    outside = Grid("EPSG:32660", Affine(10, 0, 401_200, 0, -10, 7_499_700), 60, 45)
    with pytest.raises(AuxCoverageError, match=r"TCVIS source .*tcvis\.tif covers 50\.00%"):
        tcvis_on_grid(path, outside)
    one_band = write_raster(tmp_path / "tcvis_1band.tif", values[:1], "EPSG:32660", transform)
    with pytest.raises(AuxSourceError, match=r"tcvis_1band\.tif has 1 band\(s\); 3 expected"):
        tcvis_on_grid(one_band, outside)
    as_float = write_raster(tmp_path / "tcvis_float.tif", values.astype(np.float32), "EPSG:32660", transform)
    with pytest.raises(AuxSourceError, match=r"tcvis_float\.tif has data type"):
        tcvis_on_grid(as_float, outside)


def test_land_cover_nodata_is_an_error_or_masked_as_water(tmp_path):
    classes = np.full((40, 40), 10, dtype=np.uint8)
    classes[:, :5] = WORLDCOVER_WATER
    classes[30:, 30:] = 0  # WorldCover nodata
    transform = Affine(10, 0, 400_000, 0, -10, 7_500_000)
    path = write_raster(tmp_path / "landcover.tif", classes, "EPSG:32660", transform, nodata=0)
    grid = Grid("EPSG:32660", transform, 40, 40)
    with pytest.raises(AuxCoverageError, match=r"land cover \(water mask\) source .*landcover\.tif covers 93\.75%"):
        water_mask_on_grid(path, grid, PARAMS.water_classes)
    mask = water_mask_on_grid(path, grid, PARAMS.water_classes, min_coverage=0.9)
    assert mask[:, :5].all() and mask[30:, 30:].all() and not mask[:30, 5:].any()
    three_bands = write_raster(tmp_path / "landcover_rgb.tif", np.stack([classes] * 3), "EPSG:32660", transform)
    with pytest.raises(AuxSourceError, match=r"landcover_rgb\.tif has 3 band\(s\); 1 expected"):
        water_mask_on_grid(three_bands, grid, PARAMS.water_classes)
