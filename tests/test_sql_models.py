"""SQL models: reference parsing, Table 1 and H3 grid against geopandas, injection safety, queries beside a writer."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import duckdb
import geopandas as gpd
import h3
import pandas as pd
import pytest
import shapely
from dagster import AssetKey, AssetSpec, RetryRequested, materialize
from shapely.geometry import box

from darts_assets.query import run_query
from darts_assets.sql_models import (
    SQL_VARS,
    SqlModelError,
    load_sql_models,
    materialise_model,
    sql_model_assets,
    wkt_start,
)
from darts_core.level1 import level1_features, write_level1
from darts_core.params import ProductParams
from resources.duckdb import DartsDuckDB
from resources.storage import StorageRoot

EQUAL_AREA = "EPSG:6931"
HOSTILE_ROOT = 'it\'s "root"; DROP TABLE sentinel; --'
PRODUCT_KEYS = [
    "level1_product",
    "level2_product",
    "coverage_level1_product",
    "coverage_level2_product",
    "coverage_union_product",
    "coverage_intersect_product",
]
# image id -> (date, valid-data footprint); the 2022 scene without detections has a quote in its id
SCENES = {
    "20210715_190000_00_aaaa": (datetime.date(2021, 7, 15), box(-136.0, 67.9, -134.4, 68.6)),
    "20210720_190000_00_bbbb": (datetime.date(2021, 7, 20), box(-135.5, 68.0, -133.8, 68.7)),
    "20220801_190000_00_cccc": (datetime.date(2022, 8, 1), box(-135.8, 67.95, -134.0, 68.65)),
    "20220805_190000_00_d'dd": (datetime.date(2022, 8, 5), box(-134.8, 68.2, -133.9, 68.6)),
}
WRITER = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"


def km2(geometries) -> pd.Series:
    return gpd.GeoSeries(list(geometries), crs="EPSG:4326").to_crs(EQUAL_AREA).area / 1e6


def slump(lon: float, lat: float, grow: float = 0.0) -> shapely.Polygon:
    return box(lon - 0.005 - grow, lat - 0.002, lon + 0.005, lat + 0.002 + grow)


def edge_midpoint(inside: shapely.Geometry) -> tuple[float, float]:
    """A point on an H3 level-4 cell edge well inside ``inside``: a feature there straddles two cells."""
    centre = inside.centroid
    boundary = h3.cell_to_boundary(h3.latlng_to_cell(centre.y, centre.x, 4))
    for (lat0, lon0), (lat1, lon1) in zip(boundary, boundary[1:] + boundary[:1], strict=True):
        point = shapely.Point((lon0 + lon1) / 2, (lat0 + lat1) / 2)
        if inside.buffer(-0.02).contains(point):
            return point.x, point.y
    raise AssertionError("no H3 edge inside the test coverage")


def detections() -> dict[str, list[shapely.Polygon]]:
    """Per image its RTS polygons: one slump seen twice in 2021 and grown in 2022, one on an H3 cell edge."""
    core = shapely.intersection_all([footprint for _, footprint in SCENES.values()][:3])
    edge_lon, edge_lat = edge_midpoint(core)
    return {
        "20210715_190000_00_aaaa": [slump(-135.0, 68.3), slump(edge_lon, edge_lat)],
        "20210720_190000_00_bbbb": [slump(-135.0, 68.3, 0.001), slump(-134.0, 68.5)],
        "20220801_190000_00_cccc": [slump(-135.0, 68.3, 0.003), slump(edge_lon, edge_lat, 0.002)],
        "20220805_190000_00_d'dd": [],
    }


def write_hive(root: Path) -> dict[str, gpd.GeoDataFrame]:
    """Level-1 and footprint files per scene (hive ``year=YYYY``); returns them concatenated."""
    level1, footprints = [], []
    for (image_id, (date, footprint)), polygons in zip(SCENES.items(), detections().values(), strict=True):
        frame = level1_features(
            gpd.GeoDataFrame(geometry=polygons, crs="EPSG:4326"), image_id, date, ProductParams(), 0.5
        )
        (root / "level1" / f"year={date.year}").mkdir(parents=True, exist_ok=True)
        write_level1(frame, root / "level1" / f"year={date.year}" / f"{image_id}.parquet")
        row = {"image_id": [image_id], "item_type": ["PSScene"], "date": [date], "year": [date.year]}
        footprint_frame = gpd.GeoDataFrame(row | {"valid_fraction": [0.9]}, geometry=[footprint], crs="EPSG:4326")
        (root / "footprints" / f"year={date.year}").mkdir(parents=True, exist_ok=True)
        footprint_frame.to_parquet(root / "footprints" / f"year={date.year}" / f"{image_id}.parquet")
        level1.append(frame)
        footprints.append(footprint_frame)
    return {"level1": pd.concat(level1, ignore_index=True), "footprints": pd.concat(footprints, ignore_index=True)}


def dissolve_years(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Per year the union of ``frame``, one row per connected part (like the Level-2 product)."""
    parts = frame.dissolve(by="year").reset_index()[["year", "geometry"]].explode(ignore_index=True)
    return parts.assign(id=range(len(parts)), area_m2=km2(parts.geometry).to_numpy() * 1e6)


def with_area_km2(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` with the coverage products' ``area_km2`` column."""
    return frame.assign(area_km2=km2(frame.geometry).to_numpy())


def write_products(root: Path, level1: gpd.GeoDataFrame, footprints: gpd.GeoDataFrame) -> dict:
    """Stand-ins for the product files (same names, geometry semantics and area columns)."""
    coverage2 = with_area_km2(footprints.dissolve(by="year").reset_index()[["year", "geometry"]])
    years = sorted(coverage2["year"])
    products = {
        "features_level1": level1,
        "features_level2": dissolve_years(level1),
        "coverage_level1": with_area_km2(footprints),
        "coverage_level2": coverage2,
        "coverage_union": with_area_km2(gpd.GeoDataFrame(geometry=[footprints.union_all()], crs="EPSG:4326")),
        "coverage_intersect": gpd.GeoDataFrame(
            geometry=[shapely.intersection_all(coverage2.geometry)], crs="EPSG:4326"
        ),
    }
    (root / "products").mkdir()
    for kind, frame in products.items():
        what, level = kind.split("_")
        frame.to_parquet(root / "products" / f"DARTS_{what}_{years[0]}-{years[-1]}_{level}.parquet")
    return {"years": years, **products}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """Hive Level-1/footprints, products and all SQL models materialised below a root with quotes in its name."""
    root = tmp_path_factory.mktemp("sql") / HOSTILE_ROOT
    hive = write_hive(root)
    products = write_products(root, hive["level1"], hive["footprints"])
    database = root / "darts.duckdb"
    result = materialize(
        [*sql_model_assets(), *(AssetSpec(key) for key in PRODUCT_KEYS)],
        resources={"duckdb": DartsDuckDB(database=str(database), threads=1), "storage": StorageRoot(root=str(root))},
    )
    assert result.success
    return {"root": root, "database": database, "result": result, **hive, **products}


def read_table(database: Path, sql: str) -> pd.DataFrame:
    with DartsDuckDB(database=str(database)).connect(read_only=True) as con:
        return con.sql(sql).df()


def model_dir(tmp_path: Path, **files: str) -> Path:
    for name, sql in files.items():
        (tmp_path / f"{name}.sql").write_text(sql)
    return tmp_path


def keys(*names: str) -> set[AssetKey]:
    return {AssetKey(name) for name in names}


def test_models_declare_refs_and_product_sources_as_deps() -> None:
    deps = {model.name: set(model.deps) for model in load_sql_models()}
    assert deps["level1_features"] == keys("level1_product")
    assert deps["coverage_intersect"] == keys("coverage_intersect_product")
    assert deps["h3_affected_area"] == keys("coverage_level2", "level2_features")
    assert deps["annual_statistics"] == keys(
        "coverage_level1", "coverage_level2", "level1_features", "level2_features", "coverage_union"
    )
    assets = {asset.key.to_user_string(): asset for asset in sql_model_assets()}
    assert set(assets) == {
        *("level1_features", "level2_features", "annual_statistics", "h3_affected_area"),
        *(f"coverage_{kind}" for kind in ("level1", "level2", "union", "intersect")),
    }
    spec = next(iter(assets["annual_statistics"].specs))
    assert spec.group_name == "database" and assets["annual_statistics"].op.pool == "duckdb"
    assert {dep.asset_key for dep in spec.deps} == deps["annual_statistics"]


def test_hive_sources_and_vars_render_as_variables(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, probe="SELECT {{ var('h3_resolution') }} FROM {{ source(\"level1\") }}")
    (model,) = load_sql_models(folder)
    assert set(model.deps) == {AssetKey("level1_scene_features")}
    assert model.render() == (
        "SELECT getvariable('h3_resolution') FROM "
        "read_parquet(getvariable('source_level1'), hive_partitioning = true, union_by_name = true)"
    )
    variables = model.variables(StorageRoot(root=str(tmp_path / "r'oot")), SQL_VARS)
    assert variables == {
        "source_level1": str(tmp_path / "r'oot" / "level1" / "year=*" / "*.parquet"),
        "h3_resolution": 4,
    }


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM {{ ref('nowhere') }}", "unknown ref 'nowhere'"),
        ("SELECT * FROM {{ source('level3') }}", "unknown source 'level3'"),
        ("SELECT {{ var('year') }}", "unknown var 'year'"),
        ("SELECT * FROM {{ ref('bad') }}", "unknown ref 'bad'"),
        ("SELECT {{ config(x=1) }}", "unsupported expression"),
        ("SELECT {{ ref('a'", "unclosed"),
    ],
)
def test_bad_references_name_the_file(tmp_path: Path, sql: str, message: str) -> None:
    folder = model_dir(tmp_path, a="SELECT 1 AS x", bad=sql)
    with pytest.raises(SqlModelError, match=message) as error:
        load_sql_models(folder)
    assert str(folder / "bad.sql") in str(error.value)


def test_cycles_and_bad_names_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "cycle").mkdir()
    with pytest.raises(SqlModelError, match="cycle"):
        load_sql_models(
            model_dir(tmp_path / "cycle", a="SELECT * FROM {{ ref('b') }}", b="SELECT * FROM {{ ref('a') }}")
        )
    with pytest.raises(SqlModelError, match="Bad-Name.sql"):
        load_sql_models(model_dir(tmp_path, **{"Bad-Name": "SELECT 1"}))


def test_product_source_needs_exactly_one_file(dataset: dict, tmp_path: Path) -> None:
    (model,) = load_sql_models(model_dir(tmp_path, p="SELECT * FROM {{ source('products/coverage_union') }}"))
    storage = StorageRoot(root=str(dataset["root"]))
    assert model.variables(storage, {})["source_products_coverage_union"].endswith(
        "DARTS_coverage_2021-2022_union.parquet"
    )
    with pytest.raises(FileNotFoundError, match="none"):
        model.variables(StorageRoot(root=str(tmp_path)), {})
    (tmp_path / "products").mkdir()
    for name in ("DARTS_coverage_2018-2022_union", "DARTS_coverage_2018-2023_union"):
        (tmp_path / "products" / f"{name}.parquet").touch()
    with pytest.raises(FileNotFoundError, match="2018-2023"):
        model.variables(StorageRoot(root=str(tmp_path)), {})


def expected_table1(data: dict) -> pd.DataFrame:
    """Table 1 computed with geopandas/pyproj from the same files."""
    footprints, level1, level2 = data["footprints"], data["level1"], data["features_level2"]
    coverage2 = data["coverage_level2"]
    rows = []
    for year in data["years"]:
        rows.append(
            {
                "period": str(year),
                "l1_coverage_km2": km2(footprints.geometry[footprints.year == year]).sum(),
                "l1_images": int((footprints.year == year).sum()),
                "l2_coverage_km2": km2(coverage2.geometry[coverage2.year == year]).sum(),
                "l1_features_km2": km2(level1.geometry[level1.year == year]).sum(),
                "l1_features": int((level1.year == year).sum()),
                "l2_features_km2": km2(level2.geometry[level2.year == year]).sum(),
                "l2_features": int((level2.year == year).sum()),
            }
        )
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {"period": "SUM", **table.drop(columns="period").sum()}
    all_features = level2.union_all()
    table.loc[len(table)] = {
        "period": f"Union ({data['years'][0]}-{data['years'][-1]})",
        "l2_coverage_km2": km2([footprints.union_all()]).sum(),
        "l2_features_km2": km2([all_features]).sum(),
        "l2_features": len(shapely.get_parts(all_features)),
    }
    return table


def test_annual_statistics_match_geopandas(dataset: dict) -> None:
    table = read_table(dataset["database"], "SELECT * FROM annual_statistics")
    expected = expected_table1(dataset)
    assert table["period"].tolist() == ["2021", "2022", "SUM", "Union (2021-2022)"]
    assert table["year"].tolist()[:2] == [2021, 2022] and table["year"][2:].isna().all()
    assert table.loc[3, ["l1_coverage_km2", "l1_images", "l1_features_km2", "l1_features"]].isna().all()
    for column in expected.columns[1:]:
        actual, wanted = table[column].astype(float).tolist(), expected[column].astype(float).tolist()
        assert actual == pytest.approx(wanted, rel=1e-7, nan_ok=True), column
    # the data exercise the semantics: 2 images 2021 overlap (gross > net), a slump seen twice merges in Level 2
    assert table.loc[0, "l1_coverage_km2"] > table.loc[0, "l2_coverage_km2"]
    assert table.loc[0, "l1_features"] == 4 and table.loc[0, "l2_features"] == 3


def test_h3_affected_area_matches_shapely(dataset: dict) -> None:
    cells = read_table(dataset["database"], "SELECT * EXCLUDE (geometry) FROM h3_affected_area")
    level2, coverage2 = dataset["features_level2"], dataset["coverage_level2"]
    assert (cells["h3_resolution"] == 4).all()
    assert all(h3.is_valid_cell(cell) and h3.get_resolution(cell) == 4 for cell in cells["h3_cell"])
    assert cells["affected_pct"].between(0, 100).all() and (cells["affected_pct"] > 0).any()
    for row in cells.itertuples():
        hexagon = shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(row.h3_cell)])
        covered = km2([coverage2.geometry[coverage2.year == row.year].union_all().intersection(hexagon)]).sum()
        features = level2.geometry[level2.year == row.year].intersection(hexagon)
        rts = km2(features).sum()
        assert (row.covered_km2, row.rts_area_km2) == pytest.approx((covered, rts), rel=1e-7, abs=1e-9)
        assert row.affected_pct == pytest.approx(100 * rts / covered, rel=1e-7, abs=1e-9)
        assert row.cell_area_km2 == pytest.approx(km2([hexagon]).sum(), rel=1e-9)
    per_year = cells.groupby("year")[["covered_km2", "rts_area_km2", "rts_count"]].sum()
    for year in dataset["years"]:
        # cells add vertices along the long coverage edges, which ST_Transform (vertex-wise) then bends: 0.04 %
        coverage = km2(coverage2.geometry[coverage2.year == year]).sum()
        assert per_year.loc[year, "covered_km2"] == pytest.approx(coverage, rel=1e-3)
        rts = km2(level2.geometry[level2.year == year]).sum()
        assert per_year.loc[year, "rts_area_km2"] == pytest.approx(rts, rel=1e-6)
        assert per_year.loc[year, "rts_count"] == (level2.year == year).sum()
    straddling = cells[cells.rts_area_km2 > 0].groupby("year").size()
    assert (straddling > cells[cells.rts_count > 0].groupby("year").size()).any(), "no feature crossed a cell edge"


def test_materialisation_metadata(dataset: dict) -> None:
    (event,) = dataset["result"].asset_materializations_for_node("annual_statistics")
    metadata = event.metadata
    assert metadata["dagster/row_count"].value == 4
    assert "CREATE" not in metadata["sql"].value and '"coverage_level1"' in metadata["sql"].value
    assert "| period" in metadata["preview"].value and "Union (2021-2022)" in metadata["preview"].value
    (event,) = dataset["result"].asset_materializations_for_node("coverage_union")
    assert "POLYGON" in event.metadata["preview"].value
    assert event.metadata["variables"].value["source_products_coverage_union"].startswith(str(dataset["root"]))


def test_values_and_paths_with_quotes_cannot_inject_sql(dataset: dict, tmp_path: Path) -> None:
    hostile = "2021'; DROP TABLE sentinel; --"
    folder = model_dir(
        tmp_path,
        probe="SELECT {{ var('partition_key') }} AS partition_key, count(*) AS features,\n"
        "  count(DISTINCT image_id) AS images FROM {{ source('level1') }} WHERE year = 2022",
        footprint_years="SELECT year, count(*) AS images FROM {{ source('footprints') }} GROUP BY year ORDER BY year",
    )
    database = dataset["root"] / "probe.duckdb"
    duckdb.connect(str(database)).execute("CREATE TABLE sentinel AS SELECT 1 AS x").close()
    result = materialize(
        [
            *sql_model_assets(folder, {"partition_key": hostile}),
            AssetSpec("level1_scene_features"),
            AssetSpec("planet_scene"),
        ],
        resources={"duckdb": DartsDuckDB(database=str(database)), "storage": StorageRoot(root=str(dataset["root"]))},
    )
    assert result.success
    probe = read_table(database, "SELECT * FROM probe")
    assert probe.to_dict("records") == [{"partition_key": hostile, "features": 2, "images": 1}]
    assert read_table(database, "SELECT * FROM footprint_years").values.tolist() == [[2021, 2], [2022, 2]]
    assert read_table(database, "SELECT x FROM sentinel").x.tolist() == [1]


def test_run_query_reads_the_database(dataset: dict) -> None:
    text = run_query("SELECT period, l2_features FROM annual_statistics ORDER BY year NULLS LAST", dataset["database"])
    assert "Union (2021-2022)" in text and "l2_features" in text and "Parquet" not in text
    udfs = "SELECT area_km2(ST_GeomFromText('POINT (0 70)')) AS a, h3_cell_area_km2(h3_cell(68.3, -135.0, 4)) AS b"
    text = run_query(f"SELECT a = 0 AND round(b, 1) = 1625.9 AS ok FROM ({udfs})", dataset["database"])
    assert "true" in text and "false" not in text


def test_run_query_and_assets_while_another_process_writes(dataset: dict) -> None:
    sql = "SELECT period, l2_features, h3_cell(68.3, -135.0, 4) AS cell FROM annual_statistics WHERE period = 'SUM'"
    storage = StorageRoot(root=str(dataset["root"]))
    direct = run_query(sql, dataset["database"])
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dataset["database"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(dataset["database"]), read_only=True)
        text = run_query(sql, dataset["database"], root=str(dataset["root"]))
        union = next(model for model in load_sql_models() if model.name == "coverage_union")
        with pytest.raises(RetryRequested):  # the asset step is retried later by Dagster
            materialise_model(union, DartsDuckDB(database=str(dataset["database"])), storage, SQL_VARS)
    finally:
        writer.communicate("", timeout=30)
    table, note = text.rsplit("\n", 1)
    assert table == direct
    assert "locked by a writer: answered from the Parquet files" in note and "not available" not in note


def test_run_query_beside_a_write_connection_of_this_process(dataset: dict) -> None:
    with DartsDuckDB(database=str(dataset["database"])).connect():
        text = run_query(
            "SELECT count(*) AS cells FROM h3_affected_area", dataset["database"], root=str(dataset["root"])
        )
    assert "Parquet files" in text and str(len(read_table(dataset["database"], "FROM h3_affected_area"))) in text


def test_preview_wkt_starts_like_the_whole_wkt() -> None:
    circle = shapely.Point(170.0, 70.0).buffer(0.5, quad_segs=5000)
    shapes = [
        circle,
        shapely.MultiPolygon([circle, shapely.Point(175.0, 70.0).buffer(0.1)]),
        shapely.Polygon(circle.exterior, [shapely.Point(170.0, 70.0).buffer(0.1).exterior]),
        circle.exterior,
        shapely.LineString(circle.exterior.coords),
        shapely.MultiPolygon([box(0, 0, 1, 1)]),
        shapely.Point(1.5, 2.25),
        shapely.Polygon(),
    ]
    for shape in shapes:
        for length in (5, 10, 60, 300):
            assert wkt_start(shape, length) == shape.wkt[:length], (shape.geom_type, length)
