"""Level 2 and coverage at DARTS v1 size (paper Table 1): ~120,000 Level-1 features, ~17,000 image footprints.

    uv run python benchmarks/database.py [--fraction 1.0] [--simplify-m 3] [--seed 0]

Inputs are made from real shapes (the DARTS training labels and image footprints, read in place from the shared
data folder, doi:10.5281/zenodo.12706221): each is centred, rotated and placed at hotspots spread over the
Arctic (lat 62-80°N, some straddling the antimeridian). Per year the counts of Table 1: images, Level-1 and
Level-2 features; a Level-2 site is observed 1..n times with a few metres of jitter and +-10 % size, so
observations overlap as repeated detections do. ``--fraction`` scales every count (a sample). Timings are one
run each (the pipeline's own functions, single-threaded GEOS), excluding input generation.

Figures on the 2-core development machine (2026-11-25, shared with CI), full size / 1/10 sample, seconds:
level2_features (119,449 -> 74,462 features) 9.9 / 1.0; coverage_level1 (17,169 real-shaped footprints,
78 M vertices, 3 m simplification, per year) 62.5 / 6.0; coverage_level2 30.2 / 2.4; coverage_union 8.8 / 0.8;
coverage_intersect 16.3 / 1.0. Peak memory 6.6 GB (mostly the 78 M input vertices).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from darts_core.coverage import coverage_intersect, coverage_level1, coverage_level2, coverage_union
from darts_core.level1 import LEVEL1_COLUMNS, LONLAT_CRS, SQUARE_METRES_PER_HECTARE
from darts_core.level2 import level2_features, to_lonlat
from darts_core.params import ProductParams

LABELS = Path(os.environ.get("DARTS_SHARED_DATA", "/work/shared/data")) / "labels" / "ML_training_labels"
TABLE1 = {  # year: (images, Level-1 features, Level-2 features)
    2018: (350, 5083, 3539),
    2019: (364, 5999, 3988),
    2020: (439, 7417, 4335),
    2021: (5927, 29237, 19733),
    2022: (5858, 35176, 19947),
    2023: (4231, 36537, 22966),
}
HOTSPOTS = 200
SITE_RADIUS_M = 40_000.0  # slump sites around a hotspot centre
IMAGE_RADIUS_M = 50_000.0  # image centres around a hotspot centre
JITTER_M = 5.0


def templates(pattern: str, crs: str) -> np.ndarray:
    """Real shapes of the shared files matching ``pattern`` in ``crs``, repaired (``place`` centres them)."""
    frames = [gpd.read_file(path, columns=[]) for path in sorted(LABELS.glob(f"*/{pattern}"))]
    shapes = shapely.make_valid(pd.concat(frames).to_crs(crs).geometry.to_numpy())
    return shapes[shapely.area(shapes) > 0]


def place(shapes: np.ndarray, centres: np.ndarray, angle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each shape centred, rotated by ``angle`` (rad), scaled and moved to ``centres`` (vectorised)."""
    origin = shapely.get_coordinates(shapely.centroid(shapes))
    coordinates, index = shapely.get_coordinates(shapes, return_index=True)
    local = (coordinates - origin[index]) * scale[index, None]
    cos, sin = np.cos(angle)[index], np.sin(angle)[index]
    moved = np.column_stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos])
    return shapely.set_coordinates(shapes.copy(), moved + centres[index])


def hotspot_centres(rng: np.random.Generator, count: int, crs: str) -> np.ndarray:
    """Hotspot centres in ``crs``: lat 62-80°N, lon uniform; one in ten on the antimeridian."""
    lon = rng.uniform(-180.0, 180.0, count)
    lon[: count // 10] = 180.0
    lat = rng.uniform(62.0, 80.0, count)
    x, y = Transformer.from_crs(LONLAT_CRS, crs, always_xy=True).transform(lon, lat)
    return np.column_stack([x, y])


def around(rng: np.random.Generator, centres: np.ndarray, radius: float) -> np.ndarray:
    """A uniform point in the disc of ``radius`` around each centre."""
    distance, direction = radius * np.sqrt(rng.random(len(centres))), rng.uniform(0, 2 * np.pi, len(centres))
    return centres + np.column_stack([distance * np.cos(direction), distance * np.sin(direction)])


def year_inputs(rng, year, counts, hotspots, labels, footprints, sites, crs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One year's footprints and Level-1 rows (equal-area geometries) at Table 1 counts."""
    images, observations, features = counts
    months, days = rng.integers(7, 9, images), rng.integers(1, 29, images)
    dates = [f"{year}-{month:02d}-{day:02d}" for month, day in zip(months, days, strict=True)]
    image_ids = [f"{year}_{index:05d}" for index in range(images)]
    image_centres = around(rng, hotspots[rng.integers(0, len(hotspots), images)], IMAGE_RADIUS_M)
    shapes = footprints[rng.integers(0, len(footprints), images)]
    footprint_rows = pd.DataFrame({"image_id": image_ids, "date": dates, "year": year})
    footprint_rows["geometry"] = place(shapes, image_centres, rng.uniform(0, 2 * np.pi, images), np.ones(images))
    site = rng.choice(len(sites["centre"]), features, replace=False)
    site = np.sort(np.r_[site, rng.choice(site, observations - features)])  # 1..n observations per site
    jitter = rng.uniform(-JITTER_M, JITTER_M, (len(site), 2))
    geometry = place(labels[sites["shape"][site]], sites["centre"][site] + jitter, sites["angle"][site],
                     rng.uniform(0.9, 1.1, len(site)))  # fmt: skip
    image = rng.integers(0, images, len(site))
    level1_rows = pd.DataFrame({"image_id": np.array(image_ids)[image], "date": np.array(dates)[image], "year": year})
    level1_rows["geometry"] = geometry
    return footprint_rows, level1_rows


def level1_frame(rows: pd.DataFrame, params: ProductParams) -> gpd.GeoDataFrame:
    """``LEVEL1_COLUMNS`` rows (constant geohash: Level 2 does not read it) in EPSG:4326, cut at ±180°."""
    area_m2 = shapely.area(rows["geometry"].to_numpy())
    count = len(rows)

    def text(value: str) -> pd.Series:
        return pd.Series([value] * count, dtype="string")

    frame = pd.DataFrame(
        {
            "id": np.arange(count),
            "id_geohash": text("s00000000000"),
            "date": rows["date"].astype("string").to_numpy(),
            "year": rows["year"].astype("int64").to_numpy(),
            "area_m2": area_m2,
            "area_ha": area_m2 / SQUARE_METRES_PER_HECTARE,
            "DARTS_dataset_version": text(params.dataset_version),
            "DARTS_AI_model_version": text(params.model_version),
            "DARTS_AI_model_threshold": text("0.5"),
            "feature_information": text(params.level1_information),
            "image_source": text(params.image_source),
            "image_id": rows["image_id"].astype("string").to_numpy(),
        }
    )
    geometry = gpd.GeoSeries(to_lonlat(rows["geometry"].to_numpy(), params.equal_area_crs), crs=LONLAT_CRS)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=LONLAT_CRS)[list(LEVEL1_COLUMNS)]


def database_inputs(fraction: float, seed: int, params: ProductParams) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(Level-1 features, image footprints), both EPSG:4326, at ``fraction`` of the Table 1 counts."""
    rng = np.random.default_rng(seed)
    crs = params.equal_area_crs
    labels, footprints = templates("TrainingLabel_*.gpkg", crs), templates("ImageFootprints_*.gpkg", crs)
    hotspots = hotspot_centres(rng, max(2, round(HOTSPOTS * fraction)), crs)
    site_count = round(45_000 * fraction)
    sites = {
        "centre": around(rng, hotspots[rng.integers(0, len(hotspots), site_count)], SITE_RADIUS_M),
        "shape": rng.integers(0, len(labels), site_count),
        "angle": rng.uniform(0, 2 * np.pi, site_count),
    }
    footprint_rows, level1_rows = [], []
    for year, counts in TABLE1.items():
        scaled = tuple(max(1, round(count * fraction)) for count in counts)
        rows = year_inputs(rng, year, scaled, hotspots, labels, footprints, sites, crs)
        footprint_rows.append(rows[0])
        level1_rows.append(rows[1])
    footprint_rows = pd.concat(footprint_rows, ignore_index=True)
    lonlat = to_lonlat(footprint_rows.pop("geometry").to_numpy(), crs)
    footprints_frame = gpd.GeoDataFrame(footprint_rows, geometry=gpd.GeoSeries(lonlat, crs=LONLAT_CRS))
    return level1_frame(pd.concat(level1_rows, ignore_index=True), params), footprints_frame


def timed(label: str, function: Callable, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label:<34} {time.perf_counter() - started:8.1f} s")
    return result


def per_year_coverage_level1(footprints: gpd.GeoDataFrame, params: ProductParams, simplify_m: float):
    """Coverage Level 1 one year at a time, as the per-year partitions build it (and a third of the memory)."""
    years = [coverage_level1(images, params, simplify_m=simplify_m) for _, images in footprints.groupby("year")]
    return pd.concat(years, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the Table 1 counts")
    parser.add_argument("--simplify-m", type=float, default=3.0, help="coverage_level1 footprint simplification")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = ProductParams()
    level1, footprints = timed("inputs (not part of the pipeline)", database_inputs, args.fraction, args.seed, params)
    vertices = shapely.get_num_coordinates(footprints.geometry.to_numpy()).sum()
    print(f"Level 1: {len(level1):,} features; footprints: {len(footprints):,} ({vertices:,} vertices)")
    level2 = timed("level2_features", level2_features, level1, params)
    level1_km2, level2_km2 = level1.area_m2.sum() / 1e6, level2.area_m2.sum() / 1e6
    print(f"Level 2: {len(level2):,} features, {level2_km2:,.1f} km² (Level 1 {level1_km2:,.1f} km²)")
    coverage1 = timed("coverage_level1 (per year)", per_year_coverage_level1, footprints, params, args.simplify_m)
    coverage2 = timed("coverage_level2", coverage_level2, coverage1, params)
    union = timed("coverage_union", coverage_union, coverage2, params)
    intersect = timed("coverage_intersect", coverage_intersect, coverage2, params.core_period, params)
    for row in coverage2.itertuples():
        print(f"  coverage {row.year}: {row.num_images:,} images, {row.area_km2:,.0f} km²")
    print(f"  union {union.area_km2.iloc[0]:,.0f} km², intersect {intersect.area_km2.iloc[0]:,.0f} km²")


if __name__ == "__main__":
    main()
