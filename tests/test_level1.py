"""Level-1 features: Table S2 columns and dtypes, equal-area areas, geohash, GeoParquet, antimeridian."""

from __future__ import annotations

import datetime
import json

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import box

from darts_core.level1 import GEOHASH_ALPHABET, LEVEL1_COLUMNS, geohash, level1_features, write_level1
from darts_core.params import ProductParams

PARAMS = ProductParams()
DATE = datetime.date(2023, 8, 15)
IMAGE_ID = "20230815_191951_90_24af"
UTM_8N = "EPSG:32608"  # Peel Plateau
DTYPES = {
    "id": "int64",
    "id_geohash": "string",
    "date": "string",
    "year": "int64",
    "area_m2": "float64",
    "area_ha": "float64",
    "DARTS_dataset_version": "string",
    "DARTS_AI_model_version": "string",
    "DARTS_AI_model_threshold": "string",
    "feature_information": "string",
    "image_source": "string",
    "image_id": "string",
    "geometry": "geometry",
}


def decode(code: str) -> tuple[float, float]:
    """Centre (lon, lat) of a geohash cell."""
    intervals, bit_index = [[-180.0, 180.0], [-90.0, 90.0]], 0
    for character in code:
        value = GEOHASH_ALPHABET.index(character)
        for shift in range(4, -1, -1):
            interval = intervals[bit_index % 2]
            interval[0 if (value >> shift) & 1 else 1] = sum(interval) / 2
            bit_index += 1
    return sum(intervals[0]) / 2, sum(intervals[1]) / 2


def scene_polygons(crs: str = UTM_8N, origin: tuple[float, float] = (450_000.0, 7_560_000.0)) -> gpd.GeoDataFrame:
    x, y = origin
    shapes = [
        box(x, y, x + 30, y + 36),  # 1080 m²
        shapely.MultiPolygon([box(x + 100, y, x + 109, y + 9), box(x + 109, y + 9, x + 118, y + 18)]),
        box(x + 500, y + 500, x + 800, y + 650).difference(box(x + 600, y + 550, x + 630, y + 580)),
    ]
    return gpd.GeoDataFrame({"label": [1, 2, 3]}, geometry=shapes, crs=crs)


def test_geohash_known_values():
    assert geohash(-5.6, 42.6, 5) == "ezs42"
    assert geohash(10.40744, 57.64911, 11) == "u4pruydqqvj"
    assert geohash(0.0, 0.0) == "s00000000000"  # a midpoint belongs to the upper half
    assert len(geohash(-135.0, 67.0)) == 12


def test_geohash_matches_the_table_s2_example():
    """Table S2: id_geohash fqx77bgsy65k for a 1117 m² feature starting at (-68.38536, 82.13895)."""
    lon, lat = decode("fqx77bgsy65k")
    assert geohash(lon, lat) == "fqx77bgsy65k"
    assert abs(lon - -68.38536) < 0.002 and abs(lat - 82.13895) < 0.0005  # within ~30 m of its first vertex


def test_columns_order_dtypes_and_constants():
    features = level1_features(scene_polygons(), IMAGE_ID, DATE, PARAMS, threshold=0.5)
    assert tuple(features.columns) == LEVEL1_COLUMNS
    assert {name: str(dtype) for name, dtype in features.dtypes.items()} == DTYPES
    assert features.crs == "EPSG:4326"
    assert features["id"].tolist() == [0, 1, 2]
    first = features.iloc[0]
    assert (first.date, first.year, first.image_id) == ("2023-08-15", 2023, IMAGE_ID)
    assert (first.DARTS_dataset_version, first.DARTS_AI_model_version) == ("v1.0", "RTS_v6_ensemble_v3_filterWater")
    assert (first.DARTS_AI_model_threshold, first.image_source) == ("0.5", "PlanetScope")
    assert first.feature_information == "RTS/ALD footprint - individual image - Level 1"
    assert features.geometry.is_valid.all()
    assert features.geometry.iloc[1].geom_type == "MultiPolygon"
    assert features.geometry.iloc[0].bounds[0] == pytest.approx(-136.0, abs=0.5)


def test_areas_match_geodesic_areas():
    features = level1_features(scene_polygons(), IMAGE_ID, DATE, PARAMS, threshold=0.5)
    geod = Geod(ellps="WGS84")
    geodesic = np.array([abs(geod.geometry_area_perimeter(shape)[0]) for shape in features.geometry])
    np.testing.assert_allclose(features.area_m2, geodesic, rtol=0.005)
    np.testing.assert_allclose(features.area_ha, features.area_m2 / 10_000)
    # UTM areas are near-true too (scale factor ~0.9996 squared at 50 km from the central meridian)
    np.testing.assert_allclose(features.area_m2, scene_polygons().area, rtol=0.002)


def test_geohash_is_the_centroid_in_lonlat():
    polygons = scene_polygons()
    features = level1_features(polygons, IMAGE_ID, DATE, PARAMS, threshold=0.5)
    centroids = polygons.geometry.centroid.to_crs("EPSG:4326")
    for code, centroid in zip(features.id_geohash, centroids, strict=True):
        lon, lat = decode(code)
        assert abs(lon - centroid.x) < 1e-6 and abs(lat - centroid.y) < 1e-6  # a 12-char cell is ~4 cm


def test_datetime_date_and_threshold_text():
    acquired = datetime.datetime(2021, 7, 1, 19, 30, tzinfo=datetime.UTC)
    features = level1_features(scene_polygons(), "x", acquired, PARAMS, threshold=0.45)
    assert features.date.iloc[0] == "2021-07-01" and features.year.iloc[0] == 2021
    assert features.DARTS_AI_model_threshold.iloc[0] == "0.45"


def test_geoparquet_round_trip_and_empty_file_schema(tmp_path):
    features = level1_features(scene_polygons(), IMAGE_ID, DATE, PARAMS, threshold=0.5)
    empty = level1_features(scene_polygons().iloc[:0], IMAGE_ID, DATE, PARAMS, threshold=0.5)
    assert len(empty) == 0 and tuple(empty.columns) == LEVEL1_COLUMNS
    full_path, empty_path = tmp_path / "year=2023" / "full.parquet", tmp_path / "empty.parquet"
    write_level1(features, full_path)
    write_level1(empty, empty_path)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["empty.parquet", "full.parquet", "year=2023"]
    full_schema, empty_schema = pq.read_schema(full_path), pq.read_schema(empty_path)
    assert full_schema.names == [*LEVEL1_COLUMNS, "bbox"]
    assert [str(field.type) for field in empty_schema] == [str(field.type) for field in full_schema]
    geo = json.loads(full_schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and "covering" in geo["columns"]["geometry"]
    back = gpd.read_parquet(full_path)
    assert back.crs == "EPSG:4326" and len(back) == 3
    assert back.geometry.geom_equals_exact(features.geometry, tolerance=0).all()
    assert gpd.read_parquet(empty_path).empty


def test_antimeridian_feature_is_split_and_valid():
    """A 60 m feature in UTM 1N straddling 180°E (the zone's western edge is 180°W)."""
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32601", always_xy=True)
    x, y = to_utm.transform(-180.0, 66.0)
    polygons = gpd.GeoDataFrame(geometry=[box(x - 30, y, x + 30, y + 40)], crs="EPSG:32601")
    features = level1_features(polygons, IMAGE_ID, DATE, PARAMS, threshold=0.5)
    shape = features.geometry.iloc[0]
    assert shape.is_valid and shape.geom_type == "MultiPolygon" and len(shape.geoms) == 2
    west, _, east, _ = shape.bounds
    assert west == pytest.approx(-180) and east == pytest.approx(180)
    assert all((part.bounds[2] - part.bounds[0]) < 0.01 for part in shape.geoms)
    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(shape)[0])
    assert features.area_m2.iloc[0] == pytest.approx(2400, rel=0.005)
    assert geodesic == pytest.approx(features.area_m2.iloc[0], rel=0.005)
    lon, lat = decode(features.id_geohash.iloc[0])
    assert abs(abs(lon) - 180) < 0.001 and abs(lat - 66.0002) < 0.001


def test_polygonal_parts_reaches_into_nested_collections():
    """Repairs and intersections return collections holding multipolygons: none of their polygons is lost."""
    from shapely.geometry import GeometryCollection, LineString, MultiPolygon, box

    from darts_core.level1 import polygonal_parts

    nested = GeometryCollection([MultiPolygon([box(0, 0, 1, 1), box(2, 2, 3, 3)]), LineString([(0, 0), (5, 5)])])
    assert sorted(part.area for part in polygonal_parts(nested)) == [1.0, 1.0]
