"""Level-1 features (design stage 8, paper Table S2): one row per cleaned object of one image.

- ``id``: the feature's position within its scene (0..n-1, in the order of the polygons handed in); the
  products renumber features globally.
- Areas are computed in ``ProductParams.equal_area_crs`` (EPSG:6931, Lambert azimuthal equal area over the
  whole Arctic), from the scene-CRS polygons.
- ``id_geohash``: 12-character geohash of the centroid, computed in the equal-area CRS, then transformed to
  EPSG:4326.
- Geometry in EPSG:4326 (lon, lat). A feature crossing ±180° is split at the antimeridian into a MultiPolygon
  with one part on each side (longitudes stay within [-180, 180]); features are small, so a lon/lat bounding box
  wider than 180° identifies a crossing.
- Strings are pandas ``string`` columns so that an empty file keeps the same Parquet schema.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.affinity import translate
from shapely.geometry import box

from darts_core.atomic import atomic_path
from darts_core.params import ProductParams

LEVEL1_COLUMNS = (
    "id",
    "id_geohash",
    "date",
    "year",
    "area_m2",
    "area_ha",
    "DARTS_dataset_version",
    "DARTS_AI_model_version",
    "DARTS_AI_model_threshold",
    "feature_information",
    "image_source",
    "image_id",
    "geometry",
)
LONLAT_CRS = "EPSG:4326"
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
SQUARE_METRES_PER_HECTARE = 10_000.0


def geohash(lon: float, lat: float, precision: int = 12) -> str:
    """Standard base-32 geohash: bits alternate longitude/latitude, starting with longitude.

    A value at or above an interval's midpoint gives bit 1 (half-open cells: (0, 0) -> "s000...", as geohash.org).
    """
    intervals = [[-180.0, 180.0], [-90.0, 90.0]]
    values = (lon, lat)
    characters = []
    bit_index = 0
    for _ in range(precision):
        code = 0
        for _ in range(5):
            interval, value = intervals[bit_index % 2], values[bit_index % 2]
            middle = (interval[0] + interval[1]) / 2
            code <<= 1
            if value >= middle:
                code |= 1
                interval[0] = middle
            else:
                interval[1] = middle
            bit_index += 1
        characters.append(GEOHASH_ALPHABET[code])
    return "".join(characters)


def split_antimeridian(geometry: shapely.Geometry) -> shapely.Geometry:
    """A lon/lat polygon whose vertices jump across ±180° as a valid MultiPolygon split at the antimeridian."""
    west, _, east, _ = geometry.bounds
    if geometry.is_empty or east - west <= 180:
        return geometry
    unwrapped = shapely.transform(geometry, lambda xy: xy + np.where(xy[:, :1] < 0, [360.0, 0.0], 0.0))
    unwrapped = shapely.make_valid(unwrapped)
    eastern_half = unwrapped.intersection(box(0, -90, 180, 90))
    beyond = translate(unwrapped.intersection(box(180, -90, 360, 90)), xoff=-360)
    parts = [part for half in (eastern_half, beyond) for part in polygonal_parts(half)]
    return shapely.MultiPolygon(parts)


def polygonal_parts(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    """The non-empty polygons of any geometry or array of geometries (None skipped), nested collections included
    (intersections and repairs return those, with stray lines or points that are dropped), in order."""
    parts = shapely.get_parts(geometry)
    while (shapely.get_type_id(parts) >= shapely.GeometryType.MULTIPOINT).any():  # collections: one level down
        parts = shapely.get_parts(parts)
    return parts[(shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(parts)].tolist()


def level1_features(
    polygons: gpd.GeoDataFrame,
    image_id: str,
    date: datetime.date,
    params: ProductParams,
    threshold: float,
) -> gpd.GeoDataFrame:
    """The Level-1 GeoDataFrame (``LEVEL1_COLUMNS``, EPSG:4326) of one image's cleaned polygons."""
    day = date.date() if isinstance(date, datetime.datetime) else date
    equal_area = polygons.geometry.to_crs(params.equal_area_crs)
    area_m2 = equal_area.area.to_numpy(dtype=np.float64)
    centroids = equal_area.centroid.to_crs(LONLAT_CRS)
    count = len(polygons)

    def constant(value: str) -> pd.Series:
        return pd.Series([value] * count, dtype="string")

    columns = {
        "id": pd.Series(np.arange(count), dtype="int64"),
        "id_geohash": pd.Series([geohash(point.x, point.y) for point in centroids], dtype="string"),
        "date": constant(day.isoformat()),
        "year": pd.Series([day.year] * count, dtype="int64"),
        "area_m2": pd.Series(area_m2, dtype="float64"),
        "area_ha": pd.Series(area_m2 / SQUARE_METRES_PER_HECTARE, dtype="float64"),
        "DARTS_dataset_version": constant(params.dataset_version),
        "DARTS_AI_model_version": constant(params.model_version),
        "DARTS_AI_model_threshold": constant(str(float(threshold))),
        "feature_information": constant(params.level1_information),
        "image_source": constant(params.image_source),
        "image_id": constant(image_id),
    }
    lonlat = polygons.geometry.to_crs(LONLAT_CRS).to_numpy()
    geometry = gpd.GeoSeries([split_antimeridian(shape) for shape in lonlat], crs=LONLAT_CRS)
    return gpd.GeoDataFrame(columns, geometry=geometry, crs=LONLAT_CRS)[list(LEVEL1_COLUMNS)]


def write_level1(frame: gpd.GeoDataFrame, path: Path) -> None:
    """Write ``frame`` as GeoParquet 1.1 (with bbox covering column), atomically; empty frames included."""
    with atomic_path(Path(path)) as temp_path:
        frame.to_parquet(temp_path, index=False, schema_version="1.1.0", write_covering_bbox=True)
