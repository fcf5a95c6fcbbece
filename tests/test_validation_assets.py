"""Validation asset pieces that do not need a trained model: the blocking floor check, product checks,
Level 1 <-> Level 2 consistency, and the Table-4 evaluation of both Level-2 variants."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from darts_assets.checks import level_consistency, schema_problems
from darts_core.level1 import LEVEL1_COLUMNS
from darts_core.params import ValidationParams
from resources.duckdb import DartsDuckDB
from resources.validation import ScoreFloor, ValidationSetup
from validation.assets import evaluate_variants, recurrence_effect, validation_floors
from validation.tables import table4


@pytest.fixture
def database(tmp_path) -> DartsDuckDB:
    database = DartsDuckDB(database=str(tmp_path / "darts.duckdb"))
    table = pd.DataFrame(
        {
            "validation_set": ["all", "all", "recurrent"],
            "region": ["East", "West", "West"],
            "precision_mean": [0.9, 0.4, 0.2],
            "recall_mean": [0.8, 0.9, 0.2],
        }
    )
    database.replace_table("validation_metrics", table)
    return database


def test_floor_check_fails_only_for_regions_below_their_floor(database):
    strict = ValidationSetup(floors={"*": ScoreFloor(precision=0.5, recall=0.5)})
    result = validation_floors(duckdb=database, validation=strict)
    assert not result.passed and result.metadata["below_floor"].value == {"West": {"precision": 0.4, "recall": 0.9}}
    relaxed = ValidationSetup(floors={"*": ScoreFloor(), "West": ScoreFloor(precision=0.3, recall=0.5)})
    assert validation_floors(duckdb=database, validation=relaxed).passed


def test_product_schema_problems_are_named():
    frame = gpd.GeoDataFrame(
        {name: [0] for name in LEVEL1_COLUMNS[:-1]},
        geometry=[shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])],  # a bow tie: invalid
        crs="EPSG:3413",
    )
    problems = schema_problems(frame, "features_level1")
    assert problems == ["CRS EPSG:3413 is not EPSG:4326", "1 invalid geometries"]
    assert schema_problems(frame.drop(columns="date"), "features_level1")[0].startswith("columns")


def test_level_consistency_names_the_years_that_disagree():
    level1 = pd.DataFrame({"year": [2021, 2021, 2022], "area_m2": [10.0, 5.0, 3.0]})
    level2 = pd.DataFrame({"year": [2021, 2022], "num_observations": [2, 2], "area_m2": [14.0, 4.0]})
    assert level_consistency(level1, level2) == {
        "observation_mismatch_years": [2022],
        "area_exceeds_level1_years": [2022],
    }


def test_recurrence_variant_drops_features_seen_once():
    square = shapely.box(-135.30, 67.30, -135.299, 67.3004)
    level2 = gpd.GeoDataFrame(
        {"year": [2021, 2022, 2022]},
        geometry=[square, square, shapely.box(-135.28, 67.30, -135.279, 67.3004)],  # the last one appears once
        crs="EPSG:4326",
    )
    coverage = gpd.GeoDataFrame(
        {"year": [2021, 2022]}, geometry=[shapely.box(-135.4, 67.2, -135.2, 67.4)] * 2, crs="EPSG:4326"
    )
    references = gpd.GeoDataFrame(
        {
            "reference_id": ["a"],
            "dataset": ["test"],
            "region": ["R"],
            "year": pd.array([2022], dtype="Int64"),
            "year_first": pd.array([2022], dtype="Int64"),
            "year_last": pd.array([2022], dtype="Int64"),
            "geometry_kind": ["polygon"],
        },
        geometry=[square],
        crs="EPSG:4326",
    )
    regions = gpd.GeoDataFrame({"region": ["R"]}, geometry=[shapely.box(-135.4, 67.2, -135.2, 67.4)], crs="EPSG:4326")
    scores, false_positives = evaluate_variants(level2, coverage, references, regions, ValidationParams())
    assert len(false_positives) == 1  # the single-year feature, no reference there
    table = table4(scores).set_index(["validation_set", "region"])
    assert table.loc[("all", "R"), "false_positives"] == 1 and table.loc[("recurrent", "R"), "false_positives"] == 0
    assert "precision 0.750 -> 1.000" in recurrence_effect(table.reset_index())
