"""Land-cover breakdown of false-positive detections (design stage 12, paper Table 5 layout).

The paper assigned each false positive a class by visual inspection; here each detection gets the majority
class of a land-cover raster (e.g. ESA WorldCover, class codes and names from its ``legend`` tag):

- the pixels whose centres lie inside the detection; where there are none (a detection smaller than a
  pixel), the pixels it touches;
- nodata pixels are ignored; a detection over nodata only has no class (<NA>, shown as "no data");
- ties go to the lowest class code.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window
from tabulate import tabulate

LAND_COVER_COLUMNS = ("land_cover_class", "land_cover", "features", "fraction_percent")
NO_DATA_NAME = "no data"
TABLE5_HEADERS = {"land_cover": "Category", "features": "Features [#]", "fraction_percent": "Fraction of FP [%]"}


def raster_class_names(path: Path) -> dict[int, str]:
    """Class code -> name from a raster's ``legend`` tag (lines "<code> <name>", as in ESA WorldCover)."""
    with rasterio.open(path) as source:
        legend = source.tags().get("legend", "")
    names = {}
    for line in legend.splitlines():
        code, _, name = line.strip().partition(" ")
        if code.isdigit() and name.strip():
            names[int(code)] = name.strip()
    return names


def pixel_window(bounds: tuple[float, float, float, float], source: rasterio.DatasetReader) -> Window | None:
    """The whole-pixel window of a north-up raster covering ``bounds`` (None when they miss the raster)."""
    west, south, east, north = bounds
    col_start, row_start = ~source.transform @ (west, north)
    col_end, row_end = ~source.transform @ (east, south)
    col0, row0 = max(math.floor(col_start), 0), max(math.floor(row_start), 0)
    col1, row1 = min(math.ceil(col_end), source.width), min(math.ceil(row_end), source.height)
    return Window(col0, row0, col1 - col0, row1 - row0) if col1 > col0 and row1 > row0 else None


def majority_class(geometry: shapely.Geometry, source: rasterio.DatasetReader) -> int | None:
    """The majority class (rules in the module docstring) of one geometry in the raster's CRS."""
    window = None if geometry is None or geometry.is_empty else pixel_window(geometry.bounds, source)
    if window is None:
        return None
    values = source.read(1, window=window)
    transform = source.transform @ Affine.translation(window.col_off, window.row_off)
    inside = geometry_mask([geometry], values.shape, transform, invert=True)
    if not inside.any():
        inside = geometry_mask([geometry], values.shape, transform, all_touched=True, invert=True)
    values = values[inside]
    if source.nodata is not None:
        values = values[values != source.nodata]
    if values.size == 0:
        return None
    classes, counts = np.unique(values, return_counts=True)
    return int(classes[np.argmax(counts)])


def majority_land_cover(detections: gpd.GeoDataFrame, raster_path: Path) -> pd.Series:
    """Majority land-cover class per detection (nullable Int64, the detections' index)."""
    with rasterio.open(raster_path) as source:
        if source.transform.b or source.transform.d or source.transform.e > 0:
            raise ValueError(f"{raster_path}: only north-up rasters are supported")
        geometries = detections.geometry.to_crs(source.crs).to_numpy()
        classes = [majority_class(geometry, source) for geometry in geometries]
    return pd.Series(pd.array(classes, dtype="Int64"), index=detections.index, name="land_cover_class")


def land_cover_breakdown(
    detections: gpd.GeoDataFrame, raster_path: Path, class_names: dict[int, str] | None = None
) -> pd.DataFrame:
    """Table 5: features and their percentage per majority land-cover class, most frequent first.

    ``detections``: the false positives (any CRS); ``class_names``: default the raster's legend. Columns:
    ``LAND_COVER_COLUMNS``; the percentages sum to 100 (no rows without detections).
    """
    names = raster_class_names(raster_path) if class_names is None else class_names
    classes = majority_land_cover(detections, raster_path)
    counts = classes.value_counts(dropna=False)
    table = pd.DataFrame(
        {
            "land_cover_class": pd.array(counts.index, dtype="Int64"),
            "land_cover": [NO_DATA_NAME if pd.isna(code) else names.get(int(code), str(code)) for code in counts.index],
            "features": counts.to_numpy(dtype=int),
        }
    )
    table["fraction_percent"] = 100.0 * table["features"] / max(len(detections), 1)
    return table.sort_values(["features", "land_cover_class"], ascending=[False, True], ignore_index=True)


def land_cover_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """Table 5 as a GitHub markdown table with a SUM row."""
    shown = table[["land_cover", "features", "fraction_percent"]].copy()
    total = pd.DataFrame(
        {
            "land_cover": ["SUM"],
            "features": [int(shown["features"].sum())],
            "fraction_percent": [shown["fraction_percent"].sum()],
        }
    )
    shown = pd.concat([shown, total], ignore_index=True).rename(columns=TABLE5_HEADERS)
    return tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=f".{digits}f")
