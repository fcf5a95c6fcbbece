"""The database stage as Dagster assets on real data: the DARTS training labels written as the scene assets'
Level-1 files and their image footprints as the scene footprints, then the year assets, the six products,
the products STAC catalogue and the DuckDB relations, materialised on a temporary instance."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import duckdb
import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
from dagster import AssetKey, AssetMaterialization, DagsterInstance, build_sensor_context, materialize

from darts_assets.annual import ANNUAL_ASSETS
from darts_assets.products import PRODUCT_ASSETS
from darts_assets.sensors import year_sensor
from darts_assets.sql_models import SQL_MODEL_ASSETS
from darts_core.level1 import level1_features, write_level1
from darts_core.params import ProductParams
from darts_core.scene_ids import parse_scene_id
from partitions import SCENE_PARTITIONS_NAME
from resources.duckdb import DartsDuckDB
from resources.storage import StorageRoot

LABELS = "labels/ML_training_labels"
PARAMS = ProductParams()
KINDS = ("features_level1", "features_level2", "coverage_level1", "coverage_level2", "coverage_union")


def polygonal(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Real label geometries repaired, polygonal parts kept, empty ones dropped."""
    shapes = [shapely.MultiPolygon(_parts(shapely.make_valid(shape))) for shape in frame.geometry]
    frame = frame.set_geometry(shapes, crs=frame.crs)
    return frame[~frame.geometry.is_empty]


def _parts(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    return [part for part in shapely.get_parts(shapely.get_parts(geometry)) if isinstance(part, shapely.Polygon)]


def write_scene_outputs(shared_data: Path, root: Path) -> dict[str, pd.DataFrame]:
    """Labels as ``level1/year=YYYY/<image>.parquet``, footprints as ``footprints/year=YYYY/<image>.parquet``."""
    level1 = []
    for path in sorted((shared_data / LABELS).glob("*/TrainingLabel_*.gpkg")):
        labels = polygonal(gpd.read_file(path, columns=["image_id", "image_date"]))
        for (image_id, image_date), polygons in labels.groupby(["image_id", "image_date"]):
            features = level1_features(polygons, image_id, datetime.date.fromisoformat(image_date), PARAMS, 0.5)
            folder = root / "level1" / f"year={image_date[:4]}"
            folder.mkdir(parents=True, exist_ok=True)
            write_level1(features, folder / f"{image_id}.parquet")
            level1.append(features)
    paths = sorted((shared_data / LABELS).glob("*/ImageFootprints_*.gpkg"))
    footprints = polygonal(pd.concat([gpd.read_file(path, columns=["image_id"]) for path in paths]))
    for image_id, rows in footprints.groupby("image_id"):
        date = parse_scene_id(image_id).acquired_date
        folder = root / "footprints" / f"year={date.year}"
        folder.mkdir(parents=True, exist_ok=True)
        rows.assign(date=date, year=date.year).to_parquet(folder / f"{image_id}.parquet", schema_version="1.1.0")
    return {"level1": pd.concat(level1, ignore_index=True), "footprints": footprints}


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("darts_home")
    written = write_scene_outputs(shared_data, root)
    resources = {"storage": StorageRoot(root=str(root)), "duckdb": DartsDuckDB(database=str(root / "darts.duckdb"))}
    instance = DagsterInstance.ephemeral()
    database_assets = [*PRODUCT_ASSETS, *SQL_MODEL_ASSETS]  # validation needs checkpoints: tested with the demo
    assets = [*ANNUAL_ASSETS, *database_assets]
    years = sorted({folder.name.removeprefix("year=") for folder in root.glob("*/year=*")})
    for year in years:
        result = materialize(
            assets, selection=ANNUAL_ASSETS, partition_key=year, instance=instance, resources=resources
        )
        assert result.success
    result = materialize(assets, selection=database_assets, instance=instance, resources=resources)
    assert result.success
    return {"root": root, "instance": instance, "years": years, **written}


def product(built: dict, kind: str) -> Path:
    what, level = kind.split("_", 1)
    (path,) = (built["root"] / "products").glob(f"DARTS_{what}_*_{level}.parquet")
    return path


def latest_metadata(built: dict, name: str) -> dict:
    return built["instance"].get_latest_materialization_event(AssetKey(name)).asset_materialization.metadata


def test_products_are_named_by_the_observed_period_and_agree_with_their_geopackages(built):
    names = sorted(path.name for path in (built["root"] / "products").glob("*.parquet"))
    assert names == [
        "DARTS_coverage_2018-2022_level1.parquet",
        "DARTS_coverage_2018-2022_level2.parquet",
        "DARTS_coverage_2018-2022_union.parquet",
        "DARTS_coverage_2021-2023_intersect.parquet",
        "DARTS_features_2018-2022_level1.parquet",
        "DARTS_features_2018-2022_level2.parquet",
    ]
    for path in (built["root"] / "products").glob("*.parquet"):
        frame = gpd.read_parquet(path)
        assert pyogrio.read_info(path.with_suffix(".gpkg"), layer=path.stem)["features"] == len(frame)
        assert frame.crs.to_epsg() == 4326 and frame.geometry.is_valid.all()


def test_level1_product_holds_every_detection_with_unique_ids(built):
    level1 = gpd.read_parquet(product(built, "features_level1"))
    assert len(level1) == len(built["level1"])
    assert level1["id"].tolist() == list(range(len(level1)))
    assert level1.groupby("year").size().to_dict() == built["level1"].groupby("year").size().to_dict()


def test_level2_product_invariants_per_year(built):
    level1, level2 = (
        gpd.read_parquet(product(built, "features_level1")),
        gpd.read_parquet(product(built, "features_level2")),
    )
    observations = level2.groupby("year")["num_observations"].sum()
    assert observations.to_dict() == level1.groupby("year").size().to_dict()
    level1_area, level2_area = level1.groupby("year")["area_m2"].sum(), level2.groupby("year")["area_m2"].sum()
    assert (level2_area <= level1_area * (1 + 1e-9)).all()
    points = level1.set_geometry(level1.geometry.representative_point())
    joined = gpd.sjoin(points, level2, predicate="within", lsuffix="l1", rsuffix="l2")
    joined = joined[joined["year_l1"] == joined["year_l2"]]
    assert joined.groupby(level=0).size().reindex(level1.index).eq(1).all()
    assert level2["id"].is_unique


def test_coverage_products_match_the_footprints(built):
    coverage1 = gpd.read_parquet(product(built, "coverage_level1"))
    assert set(coverage1["image_id"]) == set(built["footprints"]["image_id"])
    coverage2 = gpd.read_parquet(product(built, "coverage_level2"))
    assert coverage2.groupby("year")["num_images"].sum().to_dict() == coverage1.groupby("year").size().to_dict()
    union = gpd.read_parquet(product(built, "coverage_union"))
    assert union["area_km2"].iloc[0] <= coverage2["area_km2"].sum() + 1e-6
    intersect = gpd.read_parquet(product(built, "coverage_intersect"))
    assert intersect["coverage_period"].iloc[0] == "2021,2022,2023" and intersect["area_km2"].iloc[0] == 0


def test_annual_statistics_is_table_1_shaped(built):
    with duckdb.connect(str(built["root"] / "darts.duckdb"), read_only=True) as con:
        table = con.sql("SELECT * FROM annual_statistics").df()
    assert table["period"].tolist()[:-2] == built["years"]
    assert table["period"].tolist()[-2:] == ["SUM", "Union (2018-2022)"]
    per_year = table.set_index("period").loc[built["years"]]
    level1 = built["level1"]
    assert per_year["l1_features"].astype(int).tolist() == level1.groupby("year").size().tolist()
    coverage1 = gpd.read_parquet(product(built, "coverage_level1"))
    images = coverage1.groupby("year").size().reindex([int(year) for year in built["years"]], fill_value=0)
    assert per_year["l1_images"].astype(int).tolist() == images.tolist()
    assert table.iloc[-2]["l1_features"] == len(level1)
    markdown = latest_metadata(built, "annual_statistics")["table_1"].value
    assert "| Period" in markdown and "Union (2018-2022)" in markdown


def test_pictures_are_attached(built):
    assert "data:image/png;base64," in latest_metadata(built, "level2_product")["map"].value
    assert "data:image/png;base64," in latest_metadata(built, "h3_affected_area")["h3_grid"].value


def test_products_catalogue_is_valid_stac_with_one_item_per_product(built):
    folder = built["root"] / "products"
    catalogue = json.loads((folder / "catalog.json").read_text())
    items = [link["href"] for link in catalogue["links"] if link["rel"] == "item"]
    assert len(items) == 6
    for href in items:
        item = json.loads((folder / href).read_text())
        parquet = folder / item["assets"]["parquet"]["href"]
        assert (folder / item["assets"]["gpkg"]["href"]).is_file()
        frame = gpd.read_parquet(parquet)
        assert item["properties"]["table:row_count"] == len(frame)
        assert [column["name"] for column in item["properties"]["table:columns"]] == list(frame.columns)
        if frame.geometry.is_empty.all():
            assert "bbox" not in item and item["geometry"] is None
        else:
            assert item["bbox"] == pytest.approx(list(frame.total_bounds), abs=1e-6)
        # rustac fetches extension schemas from the web (none here): validate the core item schema offline.
        core = {**item, "stac_extensions": []}
        (folder / "core_item.json").write_text(json.dumps(core))
        rustac_validate(folder / "core_item.json")
    rustac_validate(folder / "catalog.json")


def rustac_validate(path: Path) -> None:
    result = subprocess.run(["rustac", "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_year_sensor_requests_only_the_touched_years_of_the_touched_asset():
    instance = DagsterInstance.ephemeral()
    scenes = ["20210715_193214_47_2413", "4577307_0870514_2023-07-21_2407", "20220803_192805_18_2262"]
    instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, scenes)

    def tick(cursor: str | None):
        with build_sensor_context(instance=instance, cursor=cursor) as context:
            return year_sensor(context)

    for scene in scenes[:2]:
        instance.report_runless_asset_event(AssetMaterialization("planet_scene", partition=scene))
    first = tick(None)
    requested = {(request.partition_key, tuple(request.asset_selection)) for request in first.run_requests}
    assert requested == {("2021", (AssetKey("annual_coverage"),)), ("2023", (AssetKey("annual_coverage"),))}
    assert not getattr(tick(first.cursor), "run_requests", None)
    instance.report_runless_asset_event(AssetMaterialization("level1_scene_features", partition=scenes[2]))
    third = tick(first.cursor)
    assert [(request.partition_key, request.asset_selection) for request in third.run_requests] == [
        ("2022", [AssetKey("annual_level2")])
    ]
