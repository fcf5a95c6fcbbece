"""Land-cover breakdown of false positives (Table 5 layout) on the real ESA WorldCover tile (N66E177)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from shapely.affinity import translate

from validation.landcover import (
    LAND_COVER_COLUMNS,
    land_cover_breakdown,
    land_cover_markdown,
    majority_land_cover,
    raster_class_names,
)

RASTER = Path("landcover/ESA_WorldCover_10m_2020_v100_N66E177_Map.tif")
LABELS = Path("labels/ML_training_labels/TrainingLabel_RTS_PlanetScope_Nitze_iteration002")


def pixel_box(transform, row: float, col: float, rows: float = 1, cols: float = 1) -> shapely.Polygon:
    """The lon/lat box of a block of pixels of a north-up raster."""
    west, north = transform @ (col, row)
    east, south = transform @ (col + cols, row + rows)
    return shapely.box(west, south, east, north)


def mode(values: np.ndarray) -> int:
    classes, counts = np.unique(values, return_counts=True)
    return int(classes[np.argmax(counts)])  # ties: lowest class


def frame(geometries: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=geometries, crs="EPSG:4326")


@pytest.fixture(scope="module")
def worldcover(shared_data: Path) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(shared_data / RASTER) as source:
        return source.read(1), source.transform


def test_class_names_from_the_worldcover_legend(shared_data: Path) -> None:
    names = raster_class_names(shared_data / RASTER)
    assert len(names) == 11
    assert names[60] == "Bare/sparse vegetation" and names[80] == "Permanent water bodies"
    assert names[100] == "Moss and lichen"


def test_majority_of_pixel_blocks_small_shapes_and_outside(shared_data: Path, worldcover) -> None:
    classes, transform = worldcover
    mixed = [
        (row, col)
        for row in range(0, 1000, 37)
        for col in range(0, 1000, 41)
        if len(np.unique(classes[row : row + 3, col : col + 4])) > 1
    ][:20]
    assert len(mixed) == 20
    blocks = [pixel_box(transform, row, col, 3, 4) for row, col in mixed]
    tiny = [pixel_box(transform, row + 1.4, col + 2.4, 0.2, 0.2) for row, col in mixed]  # inside one pixel
    outside = [shapely.box(170.0, 67.0, 170.01, 67.01)]
    result = majority_land_cover(frame(blocks + tiny + outside), shared_data / RASTER)
    assert str(result.dtype) == "Int64"
    expected = [mode(classes[row : row + 3, col : col + 4]) for row, col in mixed]
    expected += [int(classes[row + 1, col + 2]) for row, col in mixed]
    assert result.iloc[:-1].tolist() == expected
    assert pd.isna(result.iloc[-1])


def test_nodata_pixels_are_ignored(shared_data: Path, worldcover, tmp_path: Path) -> None:
    classes, transform = worldcover
    window = classes[:20, :20].copy()
    window[:10] = 0  # the raster's nodata value
    path = tmp_path / "with_nodata.tif"
    profile = {"driver": "GTiff", "width": 20, "height": 20, "count": 1, "dtype": "uint8", "nodata": 0}
    with rasterio.open(path, "w", crs="EPSG:4326", transform=transform, **profile) as target:
        target.write(window, 1)
        target.update_tags(legend="10  Tree cover\n60  Bare/sparse vegetation")
    half = pixel_box(transform, 6, 0, 6, 20)  # 4 nodata rows, 2 rows of classes
    result = majority_land_cover(frame([pixel_box(transform, 0, 0, 10, 20), half]), path)
    assert pd.isna(result.iloc[0]) and result.iloc[1] == mode(window[10:12])
    table = land_cover_breakdown(frame([pixel_box(transform, 0, 0, 10, 20), half]), path, {60: "bare"})
    assert table["features"].tolist() == [1, 1] and table["fraction_percent"].tolist() == [50.0, 50.0]
    assert table["land_cover_class"].isna().sum() == 1 and "no data" in set(table["land_cover"])


def brute_force_class(geometry: shapely.Geometry, classes: np.ndarray, transform) -> int:
    """Majority over the pixels whose centre lies inside, else over the pixels whose square meets the shape."""
    inverse = ~transform
    west, south, east, north = geometry.bounds
    col0, row0 = (int(np.floor(value)) for value in inverse @ (west, north))
    col1, row1 = (int(np.ceil(value)) for value in inverse @ (east, south))
    pixels = [(row, col) for row in range(row0, row1) for col in range(col0, col1)]
    inside = [(r, c) for r, c in pixels if geometry.contains(shapely.Point(transform @ (c + 0.5, r + 0.5)))]
    if not inside:
        inside = [(r, c) for r, c in pixels if geometry.intersects(pixel_box(transform, r, c))]
    return mode(np.array([classes[r, c] for r, c in inside]))


def test_table5_of_real_label_shapes_moved_onto_the_tile(shared_data: Path, worldcover) -> None:
    # no real label lies on this tile: the iteration-002 "Chukotka" labels (which lie at 113.5°E 75.4°N) are moved
    # onto it, keeping their real shapes and arrangement
    labels = gpd.read_file(next((shared_data / LABELS).glob("TrainingLabel_*.gpkg")))
    labels = labels[labels["region"] == "Chukotka"]
    moved = labels.set_geometry([translate(shapely.make_valid(g), 65.0, -8.0) for g in labels.geometry])
    classes, transform = worldcover
    result = majority_land_cover(moved, shared_data / RASTER)
    expected = [brute_force_class(geometry, classes, transform) for geometry in moved.geometry]
    assert result.tolist() == expected

    table = land_cover_breakdown(moved, shared_data / RASTER)
    markdown = land_cover_markdown(table)
    print("\nMajority WorldCover class of 311 real label shapes (Table 5 layout)\n" + markdown)
    assert tuple(table.columns) == LAND_COVER_COLUMNS
    assert table["features"].sum() == len(labels) == 311
    assert table["fraction_percent"].sum() == pytest.approx(100.0)
    assert table["features"].is_monotonic_decreasing
    counts = pd.Series(expected).value_counts()
    assert dict(zip(table["land_cover_class"], table["features"], strict=True)) == counts.to_dict()
    assert markdown.splitlines()[-1].replace(" ", "") == "|SUM|311|100.00|"
