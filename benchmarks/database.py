"""Level 2 and coverage at DARTS v1 size (paper Table 1): ~120,000 Level-1 features, ~17,000 image footprints.

    uv run python benchmarks/database.py [--fraction 1.0] [--simplify-m 3] [--seed 0]

Inputs are made from real shapes (the DARTS training labels and image footprints, read in place from the shared
data folder, doi:10.5281/zenodo.12706221): each is centred, rotated and placed at hotspots spread over the
Arctic (lat 62-80°N, some straddling the antimeridian). Per year the counts of Table 1: images, Level-1 and
Level-2 features; a Level-2 site is observed 1..n times with a few metres of jitter and +-10 % size, so
observations overlap as repeated detections do. ``--fraction`` scales every count (a sample). Timings are one
run each (the pipeline's own functions, on ``DARTS_THREADS`` threads), excluding input generation.

Figures on the 2-core development machine (2026-11-25, shared with CI), full size, seconds: level2_features
(119,449 -> 74,462 features) 6.8; coverage_level1 (17,169 real-shaped footprints, 78 M vertices, 3 m
simplification, per year) 14.6; coverage_level2 11.3; coverage_union 4.4; coverage_intersect 3.6; SQL models 14.6;
total 55.4 (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from darts_assets.sql_models import SQL_VARS, build_table, load_sql_models
from darts_core.coverage import (
    coverage_intersect,
    coverage_level1,
    coverage_level2,
    coverage_union,
    intersection_in_parts,
    prepared_footprints,
    union_in_groups,
)
from darts_core.level1 import LEVEL1_COLUMNS, LONLAT_CRS, SQUARE_METRES_PER_HECTARE, geohash, split_antimeridian
from darts_core.level2 import (
    dissolve_groups,
    geohashes,
    level2_features,
    make_valid_polygonal,
    to_equal_area,
    to_lonlat,
    touching_groups,
)
from darts_core.params import ProductParams
from darts_core.products import product_name, write_product
from darts_core.threads import THREADS_VARIABLE, worker_count
from resources.duckdb import prepare_connection
from resources.storage import StorageRoot

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
TARGET_S = 60.0  # the whole stage on 2 cores
PREVIOUS_SQL_COMMIT = "6c0cef3"  # the SQL models before the last rewrite for speed (f1b3da9~1 before the first)
REWRITTEN_SQL = ("annual_statistics", "h3_affected_area")


def templates(pattern: str, crs: str) -> np.ndarray:
    """Real shapes of the shared files matching ``pattern`` in ``crs``, repaired to polygons (``place`` centres
    them)."""
    frames = [gpd.read_file(path, columns=[]) for path in sorted(LABELS.glob(f"*/{pattern}"))]
    shapes = shapely.make_valid(pd.concat(frames).to_crs(crs).geometry.to_numpy(), method="structure")
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
    """``function(*args, **kwargs)`` once, its wall time printed; returns (result, seconds)."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - started
    print(f"  {label:<44} {seconds:8.1f} s", flush=True)
    return result, seconds


def per_year_coverage_level1(footprints: gpd.GeoDataFrame, params: ProductParams, simplify_m: float):
    """Coverage Level 1 one year at a time, as the per-year partitions build it (and a third of the memory)."""
    years = [coverage_level1(images, params, simplify_m=simplify_m) for _, images in footprints.groupby("year")]
    return pd.concat(years, ignore_index=True)


# --- the stage as the assets run it ---------------------------------------------------------------------------


def product_frames(level1, footprints, params: ProductParams, simplify_m: float) -> tuple[dict, float]:
    """Every product frame with the current darts_core functions, timed step by step; (frames, seconds)."""
    frames, total = {"features_level1": level1}, 0.0
    frames["features_level2"], seconds = timed("level2_features", level2_features, level1, params)
    total += seconds
    coverage1, seconds = timed("coverage_level1 (per year)", per_year_coverage_level1, footprints, params, simplify_m)
    frames["coverage_level1"], total = coverage1, total + seconds
    frames["coverage_level2"], seconds = timed("coverage_level2", coverage_level2, coverage1, params)
    total += seconds
    frames["coverage_union"], seconds = timed("coverage_union", coverage_union, frames["coverage_level2"], params)
    total += seconds
    intersect, seconds = timed(
        "coverage_intersect", coverage_intersect, frames["coverage_level2"], params.core_period, params
    )
    frames["coverage_intersect"] = intersect
    return frames, total + seconds


def write_products(frames: dict, folder: Path, params: ProductParams) -> float:
    """GeoParquet + GeoPackage of every product under ``folder/products``, as the product assets write them."""
    (folder / "products").mkdir(parents=True)
    years = sorted(int(year) for year in frames["features_level1"]["year"].unique())
    started = time.perf_counter()
    for kind, frame in frames.items():
        name = product_name(params, kind, params.core_period if kind == "coverage_intersect" else years)
        write_product(frame, folder / "products", name)
    return time.perf_counter() - started


def previous_template(name: str) -> str | None:
    """The SQL of model ``name`` before the speed-up (``PREVIOUS_SQL_COMMIT``), from git; None without git."""
    command = ["git", "show", f"{PREVIOUS_SQL_COMMIT}:dbt_like_sql/{name}.sql"]
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def sql_model_times(folder: Path, previous: bool) -> float:
    """Build every SQL model (``dbt_like_sql/``) over the product files into ``folder/darts.duckdb``, timed;
    ``previous``: also the earlier version of the rewritten models, side by side with the same inputs."""
    storage = StorageRoot(root=str(folder))
    total = 0.0
    with duckdb.connect(str(folder / "darts.duckdb")) as con:
        prepare_connection(con)
        for model in load_sql_models():
            variables = model.variables(storage, SQL_VARS)
            template = previous_template(model.name) if previous and model.name in REWRITTEN_SQL else None
            if template is not None:
                earlier = dataclasses.replace(model, template=template)
                timed(f"SQL model {model.name}, previous version", build_table, con, earlier, variables)
            built, seconds = timed(f"SQL model {model.name}", build_table, con, model, variables)
            total += seconds
            if model.name in REWRITTEN_SQL:
                print(f"    {built['rows']:,} rows")
    return total


def stage(level1, footprints, params: ProductParams, simplify_m: float, previous_sql: bool) -> tuple[dict, float]:
    """Level 2, coverage, products and SQL models at DARTS v1 size; prints the time of each step and the total."""
    print("\nThe database stage (current darts_core), one run per step:")
    frames, products_s = product_frames(level1, footprints, params, simplify_m)
    level2, coverage2 = frames["features_level2"], frames["coverage_level2"]
    print(f"  Level 2: {len(level2):,} features, {level2.area_m2.sum() / 1e6:,.1f} km²", end="; ")
    print(f"Level 1 {len(level1):,} features, {level1.area_m2.sum() / 1e6:,.1f} km²")
    for row in coverage2.itertuples():
        print(f"    coverage {row.year}: {row.num_images:,} images, {row.area_km2:,.0f} km²")
    union, intersect = frames["coverage_union"], frames["coverage_intersect"]
    print(f"    union {union.area_km2.iloc[0]:,.0f} km², intersect {intersect.area_km2.iloc[0]:,.0f} km²")
    with tempfile.TemporaryDirectory() as temp:
        write_s = timed("products written (GeoParquet + GeoPackage)", write_products, frames, Path(temp), params)[0]
        sql_s = sql_model_times(Path(temp), previous_sql)
    total = products_s + sql_s
    print(f"  total: Level 2 + coverage {products_s:.1f} s + SQL models {sql_s:.1f} s = {total:.1f} s", end="")
    print(f" ({total / TARGET_S:.2f} of the {TARGET_S:.0f} s target; product files {write_s:.1f} s besides)")
    return frames, products_s


# --- previous implementations and DuckDB, side by side --------------------------------------------------------


def previous_footprints(footprints: gpd.GeoDataFrame, crs: str, simplify_m: float) -> np.ndarray:
    """The previous coverage_level1 preparation: every footprint through split_antimeridian, repaired, simplified,
    repaired again."""
    split = gpd.GeoSeries([split_antimeridian(shape) for shape in footprints.geometry], crs=LONLAT_CRS)
    return make_valid_polygonal(shapely.simplify(to_equal_area(split, crs), simplify_m, preserve_topology=False))


def duckdb_unions(con: duckdb.DuckDBPyConnection, keys: np.ndarray, geometries: np.ndarray) -> list:
    """``ST_Union_Agg`` per key in DuckDB spatial (all threads), geometries handed over and back as WKB."""
    con.register("shapes", pd.DataFrame({"key": keys, "wkb": shapely.to_wkb(geometries)}))
    rows = con.execute(
        "SELECT key, ST_AsWKB(ST_Union_Agg(ST_GeomFromWKB(wkb))) FROM shapes GROUP BY key ORDER BY key"
    ).fetchall()
    con.unregister("shapes")
    return [shapely.from_wkb(wkb) for _, wkb in rows]


def relative_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.max(np.abs(shapely.area(first) - shapely.area(second)) / np.maximum(shapely.area(first), 1e-9)))


def compare_footprints(footprints: gpd.GeoDataFrame, crs: str, simplify_m: float) -> None:
    lonlat = footprints.to_crs(LONLAT_CRS)
    before, before_s = timed(
        "previous: split all, repair, simplify, repair", previous_footprints, lonlat, crs, simplify_m
    )
    after, after_s = timed(
        "current: split jumping rings, simplify, repair", prepared_footprints, lonlat.geometry, crs, simplify_m
    )
    difference = relative_difference(before, after)
    print(f"    {before_s / after_s:.1f}x; max relative area difference per footprint {difference:.1e}")


def compare_yearly_unions(con, coverage1: gpd.GeoDataFrame, crs: str) -> None:
    years = sorted(coverage1["year"].unique())
    yearly = {year: to_equal_area(coverage1.geometry[coverage1.year == year], crs) for year in years}
    keys = np.concatenate([[year] * len(shapes) for year, shapes in yearly.items()])
    every = np.concatenate(list(yearly.values()))
    previous, previous_s = timed(
        "previous: shapely union_all per year", lambda: [shapely.union_all(g) for g in yearly.values()]
    )
    current, current_s = timed(
        "current: union_in_groups per year", lambda: [union_in_groups(g) for g in yearly.values()]
    )
    duck, duck_s = timed("DuckDB ST_Union_Agg GROUP BY year", duckdb_unions, con, keys, every)
    print(
        f"    current {previous_s / current_s:.1f}x previous, {duck_s / current_s:.1f}x DuckDB; max relative area"
        f" difference {relative_difference(np.array(previous), np.array(current)):.1e} (current vs previous),"
        f" {relative_difference(np.array(previous), np.array(duck)):.1e} (DuckDB vs previous)"
    )


def compare_level2_dissolve(con, level1: gpd.GeoDataFrame, crs: str) -> None:
    shapes, labels = [], []
    for year, features in level1.groupby("year"):
        geometries = to_equal_area(features.geometry, crs)
        shapes.append(geometries)
        labels.append(touching_groups(geometries) + int(year) * 1_000_000)
    geometries, labels = np.concatenate(shapes), np.concatenate(labels)
    _, codes = np.unique(labels, return_inverse=True)
    current, current_s = timed("current: shapely dissolve_groups", dissolve_groups, geometries, codes)
    duck, duck_s = timed("DuckDB ST_Union_Agg GROUP BY group", duckdb_unions, con, codes, geometries)
    print(
        f"    shapely {duck_s / current_s:.1f}x DuckDB; max relative area difference"
        f" {relative_difference(current, np.array(duck)):.1e}"
    )


def compare_intersection(coverage2: gpd.GeoDataFrame, params: ProductParams) -> None:
    years = range(params.core_period[0], params.core_period[1] + 1)
    yearly = [union_in_groups(to_equal_area(coverage2.geometry[coverage2.year == year], params.equal_area_crs))
              for year in years]  # fmt: skip
    previous, previous_s = timed("previous: intersection_all", shapely.intersection_all, yearly)
    current, current_s = timed("current: intersection_in_parts (STRtree)", intersection_in_parts, yearly)
    print(
        f"    {previous_s / current_s:.1f}x; relative area difference"
        f" {relative_difference(np.array([previous]), np.array([current])):.1e}"
    )


def compare_geohash(level2: gpd.GeoDataFrame) -> None:
    centroids = level2.geometry.representative_point()
    lon, lat = centroids.x.to_numpy(), centroids.y.to_numpy()
    scalar, scalar_s = timed(
        "previous: level1.geohash per feature", lambda: [geohash(x, y) for x, y in zip(lon, lat, strict=True)]
    )
    vector, vector_s = timed("current: level2.geohashes (arrays)", geohashes, lon, lat)
    print(f"    {scalar_s / vector_s:.0f}x; identical: {vector.tolist() == scalar}")


def compare_threads(level1, footprints, params: ProductParams, simplify_m: float, all_cores_s: float) -> None:
    """Level 2 and coverage on one thread (``DARTS_THREADS=1``) beside the stage's run on all cores."""
    with mock.patch.dict(os.environ, {THREADS_VARIABLE: "1"}):
        _, one_thread_s = product_frames(level1, footprints, params, simplify_m)
    print(f"    one thread {one_thread_s:.1f} s, {worker_count()} cores {all_cores_s:.1f} s:", end=" ")
    print(f"{one_thread_s / all_cores_s:.2f}x")


def comparisons(level1, footprints, frames: dict, params: ProductParams, simplify_m: float, stage_s: float) -> None:
    """The changed steps: previous shapely code, current code and DuckDB spatial, side by side (one run each)."""
    crs = params.equal_area_crs
    print("\nSide by side (one run each):")
    print(" Level 2 and coverage (the steps above) on one thread:")
    compare_threads(level1, footprints, params, simplify_m, stage_s)
    print(" coverage_level1 footprint preparation, all years:")
    compare_footprints(footprints, crs, simplify_m)
    with duckdb.connect() as con:
        prepare_connection(con)
        print(" coverage_level2 union per year:")
        compare_yearly_unions(con, frames["coverage_level1"], crs)
        print(" Level-2 dissolve of touching groups:")
        compare_level2_dissolve(con, level1, crs)
    print(" coverage_intersect of the core period:")
    compare_intersection(frames["coverage_level2"], params)
    print(" Level-2 geohashes:")
    compare_geohash(frames["features_level2"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the Table 1 counts")
    parser.add_argument("--simplify-m", type=float, default=ProductParams().coverage_simplify_m)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compare", action="store_true", help="only the stage, no side-by-side comparisons")
    parser.add_argument("--previous-sql", action="store_true", help="also time the SQL models before the speed-up")
    args = parser.parse_args()
    params = ProductParams()
    (level1, footprints), _ = timed(
        "inputs (not part of the pipeline)", database_inputs, args.fraction, args.seed, params
    )
    vertices = shapely.get_num_coordinates(footprints.geometry.to_numpy()).sum()
    print(f"Level 1: {len(level1):,} features; footprints: {len(footprints):,} ({vertices:,} vertices)")
    frames, products_s = stage(level1, footprints, params, args.simplify_m, args.previous_sql)
    if not args.no_compare:
        comparisons(level1, footprints, frames, params, args.simplify_m, products_s)


if __name__ == "__main__":
    main()
