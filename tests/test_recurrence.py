"""Temporal-recurrence filter of Level-2 features: synthetic rules and the real training labels as Level 2."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from darts_core.level2 import LEVEL2_COLUMNS, level2_features
from darts_core.params import ProductParams, RecurrenceParams
from darts_core.recurrence import RECURRENCE_COLUMNS, filter_recurrent, recurrence_table
from darts_core.scene_ids import scene_year

EQUAL_AREA = "EPSG:6931"
LABELS = Path("labels/ML_training_labels")
VERSIONS = {
    "DARTS_dataset_version": "test",
    "DARTS_AI_model_version": "labels",
    "DARTS_AI_model_threshold": "0.5",
    "image_source": "PlanetScope",
}


def level1(geometries: list, years: list[int], crs: str = EQUAL_AREA) -> gpd.GeoDataFrame:
    """Level-1-like rows (the columns Level 2 reads) in EPSG:4326."""
    frame = gpd.GeoDataFrame(
        {"year": years, "date": [f"{year}-07-15" for year in years], **VERSIONS}, geometry=geometries, crs=crs
    )
    return frame.to_crs("EPSG:4326")


def level2_of(geometries: list, years: list[int]) -> gpd.GeoDataFrame:
    return level2_features(level1(geometries, years), ProductParams())


def square(x: float, y: float, width: float = 40.0, height: float = 40.0) -> shapely.Polygon:
    origin_x, origin_y = -2_000_000.0, -500_000.0  # Banks Island in EPSG:6931
    return shapely.box(origin_x + x, origin_y + y, origin_x + x + width, origin_y + y + height)


@pytest.fixture(scope="module")
def synthetic() -> gpd.GeoDataFrame:
    """A static outcrop (3 years, same outline), a growing slump (3 years), a one-off, an edge-touching pair."""
    shapes = [
        (square(0, 0), 2021),
        (square(0, 0), 2022),
        (square(0, 0), 2023),
        (square(1000, 0, 40, 30), 2021),
        (square(1000, 0, 40, 40), 2022),
        (square(1000, 0, 40, 50), 2023),
        (square(2000, 0), 2022),
        (square(3000, 0), 2022),
        (square(3040, 0), 2023),  # touches the previous one along an edge
    ]
    return level2_of([shape for shape, _ in shapes], [year for _, year in shapes])


def row_at(level2: gpd.GeoDataFrame, table: pd.DataFrame, x: float, year: int) -> pd.Series:
    """The table row of the feature of ``year`` whose equal-area x (relative to the origin) starts at ``x``."""
    west = level2.to_crs(EQUAL_AREA).bounds["minx"] + 2_000_000.0
    match = (np.abs(west - x) < 0.01) & (level2["year"] == year)
    assert match.sum() == 1
    return table[match.to_numpy()].iloc[0]


def test_recurrence_rules_on_synthetic_features(synthetic: gpd.GeoDataFrame) -> None:
    table = recurrence_table(synthetic)
    assert tuple(table.columns) == RECURRENCE_COLUMNS and table.index.equals(synthetic.index)
    static, growing = row_at(synthetic, table, 0, 2022), row_at(synthetic, table, 1000, 2021)
    assert (static["years_observed"], static["footprint_change"]) == (3, pytest.approx(0.0, abs=1e-6))
    assert growing["years_observed"] == 3
    assert growing["footprint_change"] == pytest.approx(1 - 30 / 50, abs=1e-3)  # 2021 vs 2023: IoU 30/50
    one_off = row_at(synthetic, table, 2000, 2022)
    assert one_off["years_observed"] == 1 and np.isnan(one_off["footprint_change"]) and not one_off["keep"]
    touching = row_at(synthetic, table, 3000, 2022)
    assert touching["years_observed"] == 2 and touching["footprint_change"] == pytest.approx(1.0)
    assert table["years_covered"].eq(3).all() and table["testable"].all()
    assert table["keep"].sum() == 8

    changing = recurrence_table(synthetic, RecurrenceParams(min_footprint_change=0.05))
    assert changing["keep"].sum() == 5  # the static outcrop goes
    three_years = recurrence_table(synthetic, RecurrenceParams(min_years=3))
    assert three_years["keep"].sum() == 6  # the touching pair goes
    kept = filter_recurrent(synthetic, RecurrenceParams(min_footprint_change=0.05))
    assert tuple(kept.columns) == LEVEL2_COLUMNS and len(kept) == 5 and kept.crs == synthetic.crs


def test_same_year_overlaps_are_not_recurrence() -> None:
    level2 = level2_of([square(0, 0), square(0, 0)], [2021, 2021])  # one Level-2 feature
    assert recurrence_table(level2)["years_observed"].tolist() == [1]
    empty = level2.iloc[:0]
    assert recurrence_table(empty).empty and filter_recurrent(empty).empty


def test_coverage_decides_what_can_be_tested(synthetic: gpd.GeoDataFrame) -> None:
    seen_2022_only = gpd.GeoDataFrame(
        {"year": [2021, 2022, 2023]},
        geometry=[square(-100, -100, 1200, 300), square(-100, -100, 3300, 300), square(-100, -100, 1200, 300)],
        crs=EQUAL_AREA,
    )  # 2021 and 2023 looked only at x < 1100: the one-off (x = 2000) and the touching pair only in 2022
    table = recurrence_table(synthetic, coverage=seen_2022_only)
    one_off = row_at(synthetic, table, 2000, 2022)
    assert one_off["years_covered"] == 1 and not one_off["testable"] and one_off["keep"]
    assert row_at(synthetic, table, 3040, 2023)["years_covered"] == 2  # 2022 coverage + its own year
    strict = recurrence_table(synthetic, RecurrenceParams(keep_untestable=False), seen_2022_only)
    assert not row_at(synthetic, strict, 2000, 2022)["keep"]


# --- the real training labels as a multi-year Level 2 ------------------------------------------------------


@pytest.fixture(scope="module")
def label_level2(shared_data: Path) -> gpd.GeoDataFrame:
    frames = [
        gpd.read_file(path)[["image_id", "image_date", "geometry"]]
        for path in sorted((shared_data / LABELS).glob("*/TrainingLabel_*.gpkg"))
    ]
    labels = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    labels = labels.assign(date=labels["image_date"], year=labels["image_date"].str[:4].astype(int), **VERSIONS)
    return level2_features(labels, ProductParams())


def brute_force(level2: gpd.GeoDataFrame, rows: list[int]) -> list[tuple[int, float]]:
    """(years observed, largest 1 - IoU with a partner year's union) by plain loops over all features."""
    shapes = [shapely.make_valid(geometry) for geometry in level2.to_crs(EQUAL_AREA).geometry]
    years = level2["year"].tolist()
    results = []
    for row in rows:
        partners: dict[int, list] = {}
        for other, shape in enumerate(shapes):
            if years[other] != years[row] and shape.intersects(shapes[row]):
                partners.setdefault(years[other], []).append(shape)
        changes = []
        for members in partners.values():
            union = shapely.union_all(members)
            changes.append(1 - shapes[row].intersection(union).area / shapes[row].union(union).area)
        results.append((1 + len(partners), max(changes) if changes else np.nan))
    return results


def test_real_labels_recurrence_matches_brute_force(label_level2: gpd.GeoDataFrame) -> None:
    assert label_level2.groupby("year").size().to_dict() == {2018: 120, 2019: 346, 2020: 593, 2021: 643, 2022: 151}
    table = recurrence_table(label_level2)
    rows = list(range(0, len(label_level2), 11))
    expected = brute_force(label_level2, rows)
    assert table["years_observed"].iloc[rows].tolist() == [observed for observed, _ in expected]
    assert np.allclose(table["footprint_change"].iloc[rows], [change for _, change in expected], equal_nan=True)
    assert table["recurrent"].sum() == (table["years_observed"] >= 2).sum() == 738
    kept = filter_recurrent(label_level2)
    assert len(kept) == 738 and kept.index.equals(table.index[table["keep"]])


def test_real_labels_with_real_image_footprints(shared_data: Path, label_level2: gpd.GeoDataFrame) -> None:
    frames = [gpd.read_file(path) for path in sorted((shared_data / LABELS).glob("*/ImageFootprints_*.gpkg"))]
    footprints = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    footprints = footprints.assign(year=[scene_year(image_id) for image_id in footprints["image_id"]])
    table = recurrence_table(label_level2, coverage=footprints)
    shapes = [shapely.make_valid(geometry) for geometry in label_level2.to_crs(EQUAL_AREA).geometry]
    covers = {
        int(year): shapely.union_all([shapely.make_valid(g) for g in rows.to_crs(EQUAL_AREA).geometry])
        for year, rows in footprints.groupby("year")
    }
    years = label_level2["year"].tolist()
    expected = [
        sum(year == own or cover.intersects(shape) for year, cover in covers.items()) + (own not in covers)
        for shape, own in zip(shapes, years, strict=True)
    ]
    assert table["years_covered"].tolist() == expected
    untestable = ~table["testable"]
    assert untestable.any() and table.loc[untestable, "keep"].all()  # kept by default: not looked at again
    strict = filter_recurrent(label_level2, RecurrenceParams(keep_untestable=False), footprints)
    assert len(strict) == table["recurrent"].sum()
