"""`darts demo` end to end on a fresh DARTS_HOME: sensor runs on a persistent instance, trained models, Level 1,
idempotent rerun. The demo runs once per module (several minutes on 2 cores: it trains both models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from dagster import AssetKey, DagsterInstance, RunsFilter

from darts_assets.jobs import SCENE_ASSETS
from darts_core.demo_region import load_demo_region
from darts_core.level1 import LEVEL1_COLUMNS
from darts_core.model import load_checkpoint
from darts_core.training_data import rasterise_labels, read_labels
from validation.pixel import pixel_scores


def run_demo(home: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DARTS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "darts_assets.cli", "demo"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=2700,  # generous: the demo trains two models; a shared machine can be several times slower
        check=False,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("darts_home")
    first = run_demo(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== 4/4 materialising the asset graph" in first.stdout
    return home


def test_demo_materialises_every_scene_through_the_sensor(demo_home):
    scenes = {scene.item_id for scene in load_demo_region(demo_home / "demo_region").scenes}
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        assert set(instance.get_dynamic_partitions("planet_scenes")) == scenes
        for asset in SCENE_ASSETS:
            assert instance.get_materialized_partitions(asset.key) == scenes, asset.key
        sensor_runs = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": "planet_scene_sensor"}))
        assert {run.tags["dagster/run_key"] for run in sensor_runs} == scenes


def test_rerun_is_idempotent(demo_home):
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        runs_before = instance.get_runs_count()
    catalogue = demo_home / "catalogue" / "planet_scenes.parquet"
    catalogue_bytes = catalogue.read_bytes()
    second = run_demo(demo_home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new scene partition(s) discovered" in second.stdout
    assert catalogue.read_bytes() == catalogue_bytes
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        assert instance.get_runs_count() == runs_before


def test_both_models_trained_and_level1_written_for_every_scene(demo_home):
    scenes = {scene.item_id for scene in load_demo_region(demo_home / "demo_region").scenes}
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        assert instance.get_materialized_partitions(AssetKey("model_checkpoint")) == {"tcvis", "notcvis"}
    level1 = sorted((demo_home / "level1").glob("year=*/*.parquet"))
    assert {path.stem for path in level1} == scenes
    features = pd.concat([gpd.read_parquet(path) for path in level1])
    assert tuple(features.columns) == LEVEL1_COLUMNS
    assert len(features) > 0 and features.geometry.is_valid.all() and features.crs.to_epsg() == 4326


def validation_rasters(home: Path, scene_id: str, labels) -> dict[str, np.ndarray]:
    folder = home / "scenes" / scene_id
    rasters = {}
    for name in ("tcvis", "notcvis", "ensemble", "valid_mask"):
        file = folder / (f"probability_{name}.tif" if name != "valid_mask" else "valid_mask.tif")
        with rasterio.open(file) as source:
            rasters[name] = source.read(1)
            transform, crs, shape = source.transform, source.crs, source.shape
    scene_labels = labels.loc[labels["image_id"] == scene_id].geometry.to_crs(crs)
    rasters["reference"] = rasterise_labels(scene_labels, transform, shape)
    return rasters


def test_ensemble_matches_or_beats_single_models_with_f1_above_0_7(demo_home):
    """Pixel scores on the fixed validation scenes (never seen in training); figures printed for the record."""
    _, config = load_checkpoint(demo_home / "models" / "tcvis.pt")
    labels = read_labels(demo_home / "demo_region" / "labels" / "demo_training_labels.gpkg")
    per_scene = [validation_rasters(demo_home, scene_id, labels) for scene_id in config["validation_scene_ids"]]
    joined = {name: np.concatenate([rasters[name].ravel() for rasters in per_scene]) for name in per_scene[0]}
    valid = joined["valid_mask"].astype(bool)
    scores = {
        model: pixel_scores((joined[model] >= 50) & (joined[model] != 255), joined["reference"], valid)
        for model in ("tcvis", "notcvis", "ensemble")
    }
    for model, score in scores.items():
        print(f"{model:9s} precision {score['precision']:.3f} recall {score['recall']:.3f} f1 {score['f1']:.3f}")
    assert scores["ensemble"]["f1"] >= 0.7
    assert scores["ensemble"]["f1"] >= max(scores["tcvis"]["f1"], scores["notcvis"]["f1"]) - 0.02


DEMO_YEARS = ["2018", "2021", "2022", "2023"]


def read_relation(home: Path, sql: str) -> pd.DataFrame:
    import duckdb

    with duckdb.connect(str(home / "darts.duckdb"), read_only=True) as con:
        return con.sql(sql).df()


def test_products_relations_and_catalogue(demo_home):
    products = sorted(path.name for path in (demo_home / "products").glob("*.parquet"))
    assert products == [
        "DARTS_coverage_2018-2023_level1.parquet",
        "DARTS_coverage_2018-2023_level2.parquet",
        "DARTS_coverage_2018-2023_union.parquet",
        "DARTS_coverage_2021-2023_intersect.parquet",
        "DARTS_features_2018-2023_level1.parquet",
        "DARTS_features_2018-2023_level2.parquet",
    ]
    assert (demo_home / "products" / "catalog.json").is_file()
    table1 = read_relation(demo_home, "SELECT * FROM annual_statistics")
    assert table1["period"].tolist() == [*DEMO_YEARS, "SUM", "Union (2018-2023)"]
    assert (table1.iloc[:4]["l1_images"] > 0).all() and table1.iloc[4]["l1_images"] == 10
    h3 = read_relation(demo_home, "SELECT DISTINCT year FROM h3_affected_area ORDER BY year")
    assert [str(year) for year in h3["year"]] == DEMO_YEARS


def test_validation_is_table_4_shaped_with_lineage_to_scenes_checkpoints_and_references(demo_home):
    table4 = read_relation(demo_home, "SELECT * FROM validation_metrics ORDER BY validation_set, region")
    print(table4.to_string())
    assert set(zip(table4["validation_set"], table4["region"], strict=True)) == {
        (variant, region) for variant in ("all", "recurrent") for region in ("East", "West")
    }
    assert {"precision_mean", "precision_sd", "recall_mean", "f1_mean", "true_positives"} <= set(table4.columns)
    assert (table4["true_positives"] > 0).all()
    assert len(read_relation(demo_home, "SELECT * FROM training_metrics WHERE best")) == 2
    landcover = read_relation(demo_home, "SELECT * FROM false_positive_landcover")
    assert list(landcover.columns) == ["land_cover_class", "land_cover", "features", "fraction_percent"]
    published = table4[table4["validation_set"] == "all"]
    assert landcover["features"].sum() == published["false_positives"].sum()
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        for name in ("training_metrics", "validation_metrics", "false_positive_landcover", "products_catalogue"):
            assert instance.get_latest_materialization_event(AssetKey(name)), name
        metadata = instance.get_latest_materialization_event(AssetKey("validation_metrics")).asset_materialization
        assert "| Sub Region" in metadata.metadata["table_4"].value
    from darts_assets.definitions import defs

    upstream = defs.resolve_asset_graph().get(AssetKey("validation_metrics"))
    lineage = {key.to_user_string() for key in upstream_closure(defs, AssetKey("validation_metrics"))}
    assert {"planet_scene_item", "model_checkpoint", "reference_polygons", "reference_points"} <= lineage
    assert upstream is not None


def upstream_closure(defs, key: AssetKey) -> set[AssetKey]:
    graph, seen, pending = defs.resolve_asset_graph(), set(), [key]
    while pending:
        for parent in graph.get(pending.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                pending.append(parent)
    return seen
