"""Level 2, coverage and product files on real data: the DARTS training labels (as Level-1 detections), their
image footprints and the published DARTS v1 union coverage (which reaches both sides of the antimeridian)."""

from __future__ import annotations

import datetime
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from shapely.affinity import rotate
from shapely.geometry import box

from darts_core.coverage import (
    COVERAGE_INTERSECT_COLUMNS,
    COVERAGE_LEVEL1_COLUMNS,
    COVERAGE_LEVEL2_COLUMNS,
    COVERAGE_UNION_COLUMNS,
    coverage_intersect,
    coverage_level1,
    coverage_level2,
    coverage_union,
    union_in_groups,
)
from darts_core.level1 import LEVEL1_COLUMNS, geohash, level1_features
from darts_core.level2 import (
    ANTIMERIDIAN,
    LEVEL2_COLUMNS,
    SNAP_M,
    check_polar_crs,
    geohashes,
    level2_features,
    snapped_groups,
    to_lonlat,
    touching_groups,
    union_of_groups,
)
from darts_core.params import ProductParams
from darts_core.products import product_name, write_product
from darts_core.scene_ids import parse_scene_id

PARAMS = ProductParams()
EQUAL_AREA = PARAMS.equal_area_crs
LABELS = "labels/ML_training_labels"
PUBLISHED_UNION = "darts_v1/DARTS_NitzeEtAl_v1_coverage_2018_2023_union.parquet"
LEVEL2_DTYPES = {
    "id": "int64",
    "year": "int64",
    "num_observations": "int64",
    "area_m2": "float64",
    "area_ha": "float64",
    **{name: "string" for name in ("id_geohash", "earliest_date", "latest_date", "feature_information")},
    **{name: "string" for name in ("DARTS_dataset_version", "DARTS_AI_model_version", "image_source")},
    "DARTS_AI_model_threshold": "string",
    "geometry": "geometry",
}


def repaired(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Invalid real geometries repaired (make_valid), polygonal parts kept, empty ones dropped."""
    geometries = [shapely.MultiPolygon(_polygons(shapely.make_valid(shape))) for shape in frame.geometry]
    frame = frame.set_geometry(geometries, crs=frame.crs)
    return frame[~frame.geometry.is_empty]


def _polygons(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    parts = shapely.get_parts(shapely.get_parts(geometry))
    return [part for part in parts if isinstance(part, shapely.Polygon) and not part.is_empty]


def equal_area(geometries: gpd.GeoSeries) -> np.ndarray:
    return np.asarray(geometries.to_crs(EQUAL_AREA).values, dtype=object)


def longitude_spans(geometries: gpd.GeoSeries) -> np.ndarray:
    """Longitude extent of every polygon part."""
    bounds = shapely.bounds(shapely.get_parts(geometries.to_numpy()))
    return bounds[:, 2] - bounds[:, 0]


@pytest.fixture(scope="module")
def level1(shared_data) -> gpd.GeoDataFrame:
    """All six iterations of training labels as Level-1 features, one image at a time (label dtypes differ)."""
    frames = []
    for path in sorted((shared_data / LABELS).glob("*/TrainingLabel_*.gpkg")):
        labels = repaired(gpd.read_file(path, columns=["image_id", "image_date"]))
        for (image_id, image_date), polygons in labels.groupby(["image_id", "image_date"]):
            date = datetime.date.fromisoformat(image_date)
            frames.append(level1_features(polygons, image_id, date, PARAMS, threshold=0.5))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def level2(level1) -> gpd.GeoDataFrame:
    return level2_features(level1, PARAMS)


@pytest.fixture(scope="module")
def footprints(shared_data) -> gpd.GeoDataFrame:
    """Image footprints of iterations 002-006; dates from the item ids (iteration 002 has "202-00-722")."""
    paths = sorted((shared_data / LABELS).glob("*/ImageFootprints_*.gpkg"))
    frame = repaired(pd.concat([gpd.read_file(path, columns=["image_id"]) for path in paths], ignore_index=True))
    dates = [parse_scene_id(image_id).acquired_date for image_id in frame.image_id]
    return frame.assign(date=dates, year=[date.year for date in dates])


@pytest.fixture(scope="module")
def coverage(footprints) -> dict[str, gpd.GeoDataFrame]:
    level1_coverage = coverage_level1(footprints, PARAMS)
    level2_coverage = coverage_level2(level1_coverage, PARAMS)
    return {
        "level1": level1_coverage,
        "level2": level2_coverage,
        "union": coverage_union(level2_coverage, PARAMS),
        "intersect": coverage_intersect(level2_coverage, (2020, 2021), PARAMS),
    }


# --- Level 2 ----------------------------------------------------------------------------------------------


def test_level2_columns_dtypes_and_constants(level1, level2):
    assert len(level1) > 3700 and tuple(level1.columns) == LEVEL1_COLUMNS and level1.geometry.is_valid.all()
    assert tuple(level2.columns) == LEVEL2_COLUMNS
    assert {name: str(dtype) for name, dtype in level2.dtypes.items()} == LEVEL2_DTYPES
    assert level2.crs == "EPSG:4326" and level2.geometry.is_valid.all()
    assert level2["id"].tolist() == list(range(len(level2)))
    assert level2["year"].is_monotonic_increasing
    assert (level2.feature_information == PARAMS.level2_information).all()
    assert (level2.DARTS_AI_model_threshold == "0.5").all() and (level2.image_source == "PlanetScope").all()
    assert (level2.id_geohash.str.len() == 12).all()
    assert (level2.earliest_date <= level2.latest_date).all()
    assert (level2.earliest_date.str[:4].astype(int) == level2.year).all()
    np.testing.assert_allclose(level2.area_ha, level2.area_m2 / 10_000)
    np.testing.assert_allclose(level2.area_m2, shapely.area(equal_area(level2.geometry)), rtol=1e-6)


def test_every_level1_feature_lies_in_exactly_one_level2_feature(level1, level2):
    pairs = gpd.sjoin(level1, level2[["year", "num_observations", "geometry"]], predicate="intersects")
    pairs = pairs[pairs.year_left == pairs.year_right]
    assert pairs.index.is_unique and len(pairs) == len(level1)  # every feature, exactly one of its year
    observed = pairs.groupby("index_right").size()
    assert (level2.num_observations.loc[observed.index] == observed).all()
    inner = shapely.area(
        shapely.intersection(equal_area(level1.geometry), equal_area(level2.geometry)[pairs.index_right])
    )
    assert (inner / level1.area_m2.to_numpy() >= 0.999).all()


def test_level2_areas_and_observations_per_year(level1, level2):
    by_year = pd.DataFrame(
        {
            "level1_count": level1.groupby("year").size(),
            "level1_m2": level1.groupby("year").area_m2.sum(),
            "observations": level2.groupby("year").num_observations.sum(),
            "level2_m2": level2.groupby("year").area_m2.sum(),
        }
    )
    assert by_year.index.tolist() == [2018, 2019, 2020, 2021, 2022]
    assert (by_year.observations == by_year.level1_count).all()
    assert (by_year.level2_m2 <= by_year.level1_m2 * (1 + 1e-9)).all()
    assert len(level2) < len(level1)  # the labels of repeated images overlap


def test_level2_product_files_agree(level1, level2, tmp_path):
    for kind, frame in (("features_level1", level1), ("features_level2", level2)):
        name = product_name(PARAMS, kind, frame.year)
        parquet_path, gpkg_path = write_product(frame, tmp_path, name)
        assert parquet_path.name == f"{name}.parquet" and gpkg_path.name == f"{name}.gpkg"
        geo = json.loads(pq.read_schema(parquet_path).metadata[b"geo"])
        assert geo["version"] == "1.1.0" and "covering" in geo["columns"]["geometry"]
        assert pyogrio.list_layers(gpkg_path).tolist() == [[name, "MultiPolygon"]]
        from_parquet, from_gpkg = gpd.read_parquet(parquet_path), gpd.read_file(gpkg_path, layer=name)
        assert len(from_parquet) == len(from_gpkg) == len(frame)
        assert from_gpkg.crs == from_parquet.crs == "EPSG:4326"
        assert from_parquet.groupby("year").size().equals(from_gpkg.groupby("year").size())
    assert from_parquet.num_observations.sum() == from_gpkg.num_observations.sum() == len(level1)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"DARTS_features_2018-2022_{level}.{suffix}" for level in ("level1", "level2") for suffix in ("gpkg", "parquet")
    )


def test_level2_joins_features_that_touch_across_the_antimeridian():
    """Two detections meeting at ±180° (one per side) and one more overlapping the eastern one: one feature."""
    polygons = {
        ("east", datetime.date(2022, 7, 1)): box(179.999, 66.0, 180.0, 66.001),
        ("west", datetime.date(2022, 8, 2)): box(-180.0, 66.0, -179.999, 66.001),
        ("again", datetime.date(2022, 7, 20)): box(179.9992, 66.0002, 179.9998, 66.0008),
    }
    level1 = pd.concat(
        [
            level1_features(gpd.GeoDataFrame(geometry=[shape], crs="EPSG:4326"), image, date, PARAMS, threshold)
            for ((image, date), shape), threshold in zip(polygons.items(), (0.5, 0.5, 0.45), strict=True)
        ],
        ignore_index=True,
    )
    level2 = level2_features(level1, PARAMS)
    assert len(level2) == 1
    feature = level2.iloc[0]
    assert (feature.num_observations, feature.earliest_date, feature.latest_date) == (3, "2022-07-01", "2022-08-02")
    assert feature.DARTS_AI_model_threshold == "0.45;0.5"  # disagreeing rows are joined, not hidden
    assert feature.geometry.is_valid and feature.geometry.geom_type == "MultiPolygon"
    assert feature.geometry.bounds[0] == -180.0 and feature.geometry.bounds[2] == 180.0
    assert (longitude_spans(level2.geometry) < 0.01).all()
    assert feature.area_m2 == pytest.approx(level1.area_m2.iloc[:2].sum(), abs=0.5)  # the 1 mm union grid


def test_level2_of_nothing_keeps_the_schema():
    empty = level2_features(gpd.GeoDataFrame(columns=list(LEVEL1_COLUMNS), geometry="geometry", crs=4326), PARAMS)
    assert empty.empty and tuple(empty.columns) == LEVEL2_COLUMNS
    assert {name: str(dtype) for name, dtype in empty.dtypes.items()} == LEVEL2_DTYPES


# --- coverage ---------------------------------------------------------------------------------------------


def test_coverage_level1_one_valid_row_per_image(footprints, coverage):
    level1_coverage = coverage["level1"]
    assert tuple(level1_coverage.columns) == COVERAGE_LEVEL1_COLUMNS
    assert sorted(level1_coverage.image_id) == sorted(footprints.image_id.unique())
    assert level1_coverage.geometry.is_valid.all() and (level1_coverage.geom_type == "MultiPolygon").all()
    assert level1_coverage.date.str.match(r"^\d{4}-\d{2}-\d{2}$").all()
    np.testing.assert_allclose(level1_coverage.area_km2, level1_coverage.to_crs(EQUAL_AREA).area / 1e6, rtol=1e-9)
    assert level1_coverage.area_km2.max() < 700  # scenes and orthotiles (25 km), not their bounding boxes


def test_coverage_levels_are_consistent(coverage):
    level1_coverage, level2_coverage = coverage["level1"], coverage["level2"]
    union, intersect = coverage["union"].iloc[0], coverage["intersect"].iloc[0]
    assert tuple(level2_coverage.columns) == COVERAGE_LEVEL2_COLUMNS
    assert tuple(coverage["union"].columns) == COVERAGE_UNION_COLUMNS
    assert tuple(coverage["intersect"].columns) == COVERAGE_INTERSECT_COLUMNS
    assert level2_coverage.year.tolist() == [2020, 2021, 2022]
    assert level2_coverage.num_images.tolist() == level1_coverage.groupby("year").size().tolist()
    assert (level2_coverage.area_km2 <= level1_coverage.groupby("year").area_km2.sum().to_numpy() + 1e-6).all()
    assert (union.coverage_period, union.num_years, union.num_images) == ("2020,2021,2022", 3, len(level1_coverage))
    assert union.area_km2 >= level2_coverage.area_km2.max() >= level2_coverage.area_km2.min() >= intersect.area_km2
    assert union.area_km2 <= level2_coverage.area_km2.sum()
    assert intersect.coverage_period == "2020,2021" and intersect.area_km2 > 50  # Novaya Zemlya: 2020 and 2021
    core = equal_area(level2_coverage[level2_coverage.year.isin([2020, 2021])].geometry)
    inside = equal_area(coverage["intersect"].geometry)[0]
    assert all(shapely.area(shapely.difference(inside, year)) < 1e-6 * shapely.area(inside) for year in core)
    for frame in (level2_coverage, coverage["union"], coverage["intersect"]):
        assert frame.geometry.is_valid.all() and (frame.geom_type == "MultiPolygon").all()
        np.testing.assert_allclose(frame.area_km2, frame.to_crs(EQUAL_AREA).area / 1e6, rtol=1e-6)


def test_coverage_intersect_without_a_core_year_is_empty(coverage):
    intersect = coverage_intersect(coverage["level2"], PARAMS.core_period, PARAMS)  # no 2023 footprints
    assert intersect.coverage_period.iloc[0] == "2021,2022,2023" and intersect.area_km2.iloc[0] == 0
    assert intersect.geometry.iloc[0].is_empty


def test_coverage_of_footprints_across_the_antimeridian():
    """A footprint whose ring jumps from 179.9°E to 179.9°W, given twice (two rows of one image), plus its split
    twin in the next year: one row per image, cut at ±180°, union and intersect equal to it."""
    jumping = shapely.Polygon([(179.9, 66.0), (-179.9, 66.0), (-179.9, 66.2), (179.9, 66.2)])
    split = shapely.MultiPolygon([box(179.9, 66.0, 180.0, 66.2), box(-180.0, 66.0, -179.9, 66.2)])
    footprints = gpd.GeoDataFrame(
        {"image_id": ["a", "a", "b"], "date": ["2021-07-01", "2021-07-01", "2022-07-02"], "year": [2021, 2021, 2022]},
        geometry=[jumping, jumping, split],
        crs="EPSG:4326",
    )
    level1_coverage = coverage_level1(footprints, PARAMS)
    assert level1_coverage.image_id.tolist() == ["a", "b"]
    expected_km2 = gpd.GeoSeries([split], crs=4326).to_crs(EQUAL_AREA).area.iloc[0] / 1e6
    np.testing.assert_allclose(level1_coverage.area_km2, expected_km2, rtol=1e-6)
    level2_coverage = coverage_level2(level1_coverage, PARAMS)
    union, intersect = (
        coverage_union(level2_coverage, PARAMS),
        coverage_intersect(level2_coverage, (2021, 2022), PARAMS),
    )
    for frame in (level1_coverage, level2_coverage, union, intersect):
        assert frame.geometry.is_valid.all() and (longitude_spans(frame.geometry) < 0.2 + 1e-9).all()
        assert tuple(frame.total_bounds[[0, 2]]) == (-180, 180)
        np.testing.assert_allclose(frame.area_km2, expected_km2, rtol=1e-6)


# --- the published DARTS v1 union coverage ----------------------------------------------------------------


@pytest.fixture(scope="module")
def published(shared_data) -> gpd.GeoDataFrame:
    return gpd.read_parquet(shared_data / PUBLISHED_UNION)


@pytest.mark.parametrize("degrees", [0.0, -55.0, 50.0])
def test_published_union_survives_the_antimeridian(published, degrees, tmp_path):
    """Union of the published polygons, also turned about the pole so that large ones straddle ±180°."""
    turned = [rotate(shape, degrees, origin=(0.0, 0.0)) for shape in equal_area(published.geometry)]
    if degrees:
        assert shapely.intersects(turned, ANTIMERIDIAN).sum() == 3  # 337,005 and 68,426 km² of polygons
    frame = gpd.GeoDataFrame({"year": [2018] * len(turned)}, geometry=turned, crs=EQUAL_AREA)
    union = coverage_union(frame, PARAMS)
    published_km2 = published.area_km2.sum()  # 1,636,692 km² (Table 1), computed by DARTS in EPSG:6931
    assert published_km2 == pytest.approx(1_636_692, abs=1)
    assert union.area_km2.iloc[0] == pytest.approx(published_km2, rel=1e-9)
    assert union.geometry.is_valid.all() and len(shapely.get_parts(union.geometry.iloc[0])) >= len(published)
    assert (longitude_spans(union.geometry) < 180).all()
    west, _, east, _ = union.total_bounds
    assert (west, east) == (-180, 180) if degrees else (west > -180 and east < 180)  # cut exactly at ±180° or not
    name = product_name(PARAMS, "coverage_union", range(2018, 2024))
    for path in write_product(union, tmp_path, name):
        back = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path, layer=name)
        assert back.to_crs(EQUAL_AREA).area.sum() / 1e6 == pytest.approx(published_km2, rel=1e-4)
        assert back.area_km2.iloc[0] == union.area_km2.iloc[0] and back.is_valid.all()


def test_geohashes_of_arrays_equal_the_scalar_geohash():
    rng = np.random.default_rng(0)
    lon = np.r_[rng.uniform(-180, 180, 2000), -180, 180, 0, 360 / 2**12 - 180, 179.999999999]
    lat = np.r_[rng.uniform(-90, 90, 2000), -90, 90, 0, 180 / 2**12 - 90, 67.3]
    assert geohashes(lon, lat).tolist() == [geohash(x, y) for x, y in zip(lon, lat, strict=True)]


def test_union_of_groups_equals_union_all(level1):
    """Overlapping, corner-touching and separate polygons: the same parts and area as one union_all, except
    slivers below 1e-9 of the area that only the global union's snapping drops (5 of 1,442 on the real labels)."""
    corner = [box(0, 0, 1, 1), box(1, 1, 2, 2), box(0.5, 0.5, 1.5, 0.9), box(5, 5, 6, 6)]
    for geometries in (corner, level1.geometry.to_numpy()):
        expected, result = shapely.union_all(geometries), union_of_groups(np.asarray(geometries, dtype=object))
        assert result.is_valid and result.area == pytest.approx(expected.area, rel=1e-12)
        assert shapely.symmetric_difference(result, expected).area <= 1e-9 * expected.area
        parts = [shapely.get_parts(union) for union in (result, expected)]
        assert [np.count_nonzero(shapely.area(part) > 1e-9 * expected.area) for part in parts] == [len(parts[1])] * 2


def test_snapped_groups_join_what_snapping_at_the_antimeridian_would_join():
    """Split halves 1e-9 m apart and a neighbour 0.4 mm from a member of their group (snapped to the 1 mm grid)
    join; the same 0.4 mm gap away from the antimeridian, and a polygon touching nothing, stay apart."""
    east, west = box(0.0, 1e6, 500.0, 1e6 + 500.0), box(-500.0, 1e6, -1e-9, 1e6 + 500.0)
    beside_east = box(500.0004, 1e6, 900.0, 1e6 + 500.0)  # 0.4 mm from the east half
    far, far_beside = box(1e5, 1e6, 1e5 + 500, 1e6 + 500), box(1e5 + 500.0004, 1e6, 1e5 + 900, 1e6 + 500)
    alone = box(3e5, 1e6, 3e5 + 10, 1e6 + 10)
    geometries = np.array([east, west, beside_east, far, far_beside, alone], dtype=object)
    labels = snapped_groups(geometries)
    assert labels[0] == labels[1] == labels[2] and len({labels[3], labels[4], labels[5], labels[0]}) == 4
    within_1mm = touching_groups(geometries)
    assert within_1mm[3] == within_1mm[4]  # touching_groups joins the far pair, where nothing is snapped
    union = union_in_groups(geometries)
    snapped = shapely.union_all(geometries[:3], grid_size=SNAP_M)
    assert union.is_valid and len(union.geoms) == 4
    assert union.area == pytest.approx(snapped.area + shapely.area(geometries[3:]).sum(), rel=1e-12)


# --- names, writer checks, projection guards --------------------------------------------------------------


def test_product_names_follow_the_design():
    years = [2018, 2023, 2021]
    assert product_name(PARAMS, "features_level1", years) == "DARTS_features_2018-2023_level1"
    assert product_name(PARAMS, "features_level2", years) == "DARTS_features_2018-2023_level2"
    assert product_name(PARAMS, "coverage_level1", years) == "DARTS_coverage_2018-2023_level1"
    assert product_name(PARAMS, "coverage_level2", years) == "DARTS_coverage_2018-2023_level2"
    assert product_name(PARAMS, "coverage_union", years) == "DARTS_coverage_2018-2023_union"
    assert product_name(PARAMS, "coverage_intersect", PARAMS.core_period) == "DARTS_coverage_2021-2023_intersect"
    with pytest.raises(ValueError, match="unknown product kind"):
        product_name(PARAMS, "features_level3", years)
    with pytest.raises(ValueError, match="at least one year"):
        product_name(PARAMS, "coverage_union", [])


def test_write_product_refuses_other_crs_and_invalid_geometry(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(ValueError, match="EPSG:4326"):
        write_product(gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=EQUAL_AREA), tmp_path, "x")
    with pytest.raises(ValueError, match="1 invalid"):
        write_product(gpd.GeoDataFrame(geometry=[bowtie], crs=4326), tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


def test_projection_guards():
    check_polar_crs("EPSG:3995")  # Arctic polar stereographic: also centred on 0°E
    with pytest.raises(ValueError, match="north-polar"):
        check_polar_crs("EPSG:3413")  # centred on 45°W: the antimeridian is not the +y axis
    with pytest.raises(ValueError, match="North Pole"):
        to_lonlat(np.array([box(-1000, -1000, 1000, 1000)]), EQUAL_AREA)
