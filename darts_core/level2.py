"""Level-2 features (design stage 9, paper Table S3): the Level-1 features of one calendar year, dissolved.

- A Level-2 feature is a connected group of one year's Level-1 features: features that overlap or touch
  (closer than ``SNAP_M`` = 1 mm in the equal-area CRS) belong to the same group, transitively. Its geometry
  is the union of the group, computed in ``ProductParams.equal_area_crs``. This is "one feature
  per connected part of the union", except that a group stays one feature (a MultiPolygon) where its members
  only touch at a point or a member is itself multi-part: every Level-1 feature belongs to exactly one
  Level-2 feature, so ``num_observations`` sums to the Level-1 count of the year. Unions are on a 1 mm grid
  at the antimeridian only (see ``dissolve_groups``).
- ``num_observations``: number of Level-1 features in the group; ``earliest_date`` / ``latest_date``: their
  first and last ``date``.
- Version columns (dataset/model version, threshold, image source) come from the Level-1 rows; where the
  rows of one group disagree, the distinct values are joined with ``;`` (sorted), so a mixed group is
  visible in the product instead of failing the whole year.
- ``area_m2`` / ``area_ha``: of the union, in the equal-area CRS; ``id_geohash``: its centroid (equal-area
  CRS, then EPSG:4326), as in Level 1; ``id``: 0..n-1 after sorting by year and geohash.
- Antimeridian: the union is done in the equal-area CRS, where the two halves of a split Level-1 feature are
  neighbours (1 mm grid closes the ~1e-9 m gap that ±180° leaves). Back in EPSG:4326 every geometry that
  meets the antimeridian is cut there (``to_lonlat``), so no part spans more than 180° of longitude.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import LineString, box

from darts_core.level1 import GEOHASH_ALPHABET, LONLAT_CRS, SQUARE_METRES_PER_HECTARE, polygonal_parts
from darts_core.params import ProductParams
from darts_core.threads import chunk_bounds, in_chunks, map_in_batches, map_in_threads

LEVEL2_COLUMNS = (
    "id",
    "id_geohash",
    "year",
    "area_m2",
    "area_ha",
    "num_observations",
    "earliest_date",
    "latest_date",
    "DARTS_dataset_version",
    "DARTS_AI_model_version",
    "DARTS_AI_model_threshold",
    "feature_information",
    "image_source",
    "geometry",
)
AGREED_COLUMNS = (
    "DARTS_dataset_version",
    "DARTS_AI_model_version",
    "DARTS_AI_model_threshold",
    "image_source",
)
TRANSFORM_BLOCK = 1 << 16  # coordinates projected per pyproj call (2 MB: stays in the cache)
MANY_PARTS = 16  # geometries with more parts are validated part by part (make_valid_polygonal)
SNAP_M = 0.001  # touching tolerance and union grid in the equal-area CRS (1 mm)
FAR_M = 1e8  # beyond any coordinate of a polar CRS (m)
ANTIMERIDIAN = LineString([(0.0, 0.0), (0.0, FAR_M)])  # lon = ±180° in a north-polar CRS centred on 0°E


# --- antimeridian-safe projection helpers (shared with darts_core.coverage) -------------------------------


def check_polar_crs(crs: str) -> None:
    """Raise unless ``crs`` maps the North Pole to (0, 0) and 180° to the +y axis (EPSG:6931, 3995, ...)."""
    to_crs = Transformer.from_crs(LONLAT_CRS, crs, always_xy=True)
    (pole_x, pole_y), (x, y) = to_crs.transform(0.0, 90.0), to_crs.transform(180.0, 60.0)
    if max(abs(pole_x), abs(pole_y), abs(x)) > 1e-3 or y <= 0 or not CRS(crs).is_projected:
        raise ValueError(f"{crs} is not a north-polar projection centred on 0°E: cannot cut at the antimeridian")


def to_equal_area(geometries: gpd.GeoSeries, crs: str) -> np.ndarray:
    """Geometries of any CRS (EPSG:4326 ones split at ±180° where they cross it) in the polar ``crs``, valid."""
    return make_valid_polygonal(reprojected(geometries, crs))


def reprojected(geometries: gpd.GeoSeries, crs: str) -> np.ndarray:
    """``geometries.to_crs(crs)`` as an array of 2D geometries, the coordinates projected on all cores."""
    if geometries.crs is None:
        raise ValueError("geometries without a CRS cannot be projected")
    transformer = Transformer.from_crs(geometries.crs, crs, always_xy=True)
    return transformed(np.asarray(geometries.values, dtype=object), transformer)


def transformed(geometries: np.ndarray, transformer: Transformer) -> np.ndarray:
    """Every coordinate through ``transformer`` (x/y order) on all cores: chunks of geometries where there are
    enough (shapely's coordinate copies then run in parallel too: 1.5x), else chunks of one geometry's coordinates."""
    geometries = np.asarray(geometries, dtype=object)

    def project(chunk: np.ndarray) -> np.ndarray:
        return shapely.transform(chunk, lambda xy: _through(transformer, xy))

    if len(chunk_bounds(len(geometries))) > 1:
        return in_chunks(project, geometries)
    return shapely.transform(geometries, lambda xy: in_chunks(lambda rows: _through(transformer, rows), xy))


def _through(transformer: Transformer, xy: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates transformed, block by block of ``TRANSFORM_BLOCK`` rows (in the cache), each on contiguous
    copies that pyproj transforms in place without the GIL: 2.5x one strided call on 2 cores."""
    xy = np.asarray(xy, dtype=np.float64)
    result = np.empty_like(xy)
    for start in range(0, len(xy), TRANSFORM_BLOCK):
        block = slice(start, start + TRANSFORM_BLOCK)
        x, y = np.ascontiguousarray(xy[block, 0]), np.ascontiguousarray(xy[block, 1])
        transformer.transform(x, y, inplace=True)
        result[block, 0], result[block, 1] = x, y
    return result


def make_valid_polygonal(geometries: np.ndarray) -> np.ndarray:
    """Repair invalid geometries, keeping their polygonal parts (lines and points from repairs are dropped).

    Geometries of more than ``MANY_PARTS`` parts (a year's coverage) are checked part by part (``_repaired``):
    GEOS checks one whole geometry on one core, seconds for a year of DARTS v1 coverage.
    """
    geometries = np.asarray(geometries, dtype=object).copy()
    many = shapely.get_num_geometries(geometries) > MANY_PARTS
    few = np.flatnonzero(~many)
    suspect = np.sort(np.r_[np.flatnonzero(many), few[~in_chunks(shapely.is_valid, geometries[few])]])
    for index, repaired in zip(suspect, map_in_threads(_repaired, geometries[suspect]), strict=True):
        geometries[index] = repaired
    return geometries


def _repaired(geometry: shapely.Geometry) -> shapely.Geometry:
    """A valid (Multi)Polygon of the polygonal parts: invalid parts repaired one by one, then only clusters of
    parts that meet unioned (valid parts that do not meet make a valid MultiPolygon).

    Much faster than ``make_valid`` on a whole coverage (hundreds of parts, ~1e6 vertices) with a few bad parts.
    """
    parts = np.array(polygonal_parts(geometry), dtype=object)
    bad = ~in_chunks(shapely.is_valid, parts)
    if bad.any():
        repaired = shapely.GeometryCollection([*parts[~bad], *shapely.make_valid(parts[bad])])
        parts = np.array(polygonal_parts(repaired), dtype=object)
    labels = touching_groups(parts, tolerance=0.0)
    if labels.max(initial=-1) + 1 < len(parts):  # some parts meet: union each cluster
        clusters = dissolve_groups(parts, labels, snap_at_antimeridian=False)
        parts = np.array(polygonal_parts(clusters), dtype=object)
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts.tolist())


def to_lonlat(geometries: np.ndarray, crs: str) -> np.ndarray:
    """Polar-CRS geometries in EPSG:4326; those meeting the antimeridian are cut there (one part per side).

    Geometries containing the North Pole are refused (their lon/lat outline needs extra pole vertices).
    """
    check_polar_crs(crs)
    geometries = np.asarray(geometries, dtype=object)
    if shapely.intersects(geometries, shapely.Point(0.0, 0.0)).any():
        raise ValueError("a geometry contains the North Pole: not supported in EPSG:4326 output")
    transformer = Transformer.from_crs(crs, LONLAT_CRS, always_xy=True)
    lonlat = transformed(geometries, transformer)
    for index in np.flatnonzero(shapely.intersects(geometries, ANTIMERIDIAN)):
        lonlat[index] = _cut_at_antimeridian(geometries[index], transformer)
    return make_valid_polygonal(lonlat)


def _cut_at_antimeridian(geometry: shapely.Geometry, transformer: Transformer) -> shapely.Geometry:
    """Polygons crossing x = 0 cut there (lon 0° and ±180°), each half pinned to its side, the 0° seam re-joined."""
    parts = np.array(polygonal_parts(geometry), dtype=object)
    crossing = shapely.intersects(parts, ANTIMERIDIAN)
    pieces = list(shapely.transform(parts[~crossing], lambda xy: _project(xy, transformer, east=None)))
    for part in parts[crossing]:
        east = _project_geometry(shapely.intersection(part, box(0.0, -FAR_M, FAR_M, FAR_M)), transformer, east=True)
        west = _project_geometry(shapely.intersection(part, box(-FAR_M, -FAR_M, 0.0, FAR_M)), transformer, east=False)
        pieces.extend(polygonal_parts(shapely.union(east, west)))
    return shapely.MultiPolygon(pieces)


def _project(xy: np.ndarray, transformer: Transformer, east: bool | None) -> np.ndarray:
    """lon/lat of polar-CRS coordinates; ``east`` pins x = 0 on the +y axis to +180 (True) or -180 (False)."""
    lon, lat = transformer.transform(xy[:, 0], xy[:, 1])
    if east is True:  # x >= 0: lon in [0, 180]
        lon = np.clip(np.where(lon < -90.0, lon + 360.0, lon), 0.0, 180.0)
    elif east is False:  # x <= 0: lon in [-180, 0]
        lon = np.clip(np.where(lon > 90.0, lon - 360.0, lon), -180.0, 0.0)
    return np.column_stack([lon, lat])


def _project_geometry(half: shapely.Geometry, transformer: Transformer, east: bool) -> shapely.Geometry:
    lonlat = shapely.transform(shapely.MultiPolygon(polygonal_parts(half)), lambda xy: _project(xy, transformer, east))
    return make_valid_polygonal(np.array([lonlat], dtype=object))[0]  # a straight edge is another line here


# --- Level 2 ---------------------------------------------------------------------------------------------


def touching_groups(geometries: np.ndarray, tolerance: float = SNAP_M) -> np.ndarray:
    """Connected-component label per geometry: geometries closer than ``tolerance`` share a label."""
    left, right = query_pairs(shapely.STRtree(geometries), geometries, tolerance)
    return _components(len(geometries), left, right)


def _components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(left), dtype=bool), (left, right)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def snapped_groups(geometries: np.ndarray, tolerance: float = SNAP_M) -> np.ndarray:
    """Labels of groups whose unions do not meet once the groups at the antimeridian are snapped to the
    ``SNAP_M`` grid (``dissolve_groups``): polygons that intersect share a label, and so do polygons closer than
    ``tolerance`` (at least ``SNAP_M``) where one of them is in a group at the antimeridian (snapping moves it up
    to half the grid).

    Unions per group equal those of ``touching_groups(tolerance)``, 2x faster: only the groups at the
    antimeridian need distances (the two halves of a split footprint are 1e-9 m apart).
    """
    tree = shapely.STRtree(geometries)
    left, right = query_pairs(tree, geometries)
    labels = _components(len(geometries), left, right)
    near = snapped_at_antimeridian(geometries)
    checked = np.zeros(len(geometries), dtype=bool)
    while len(unchecked := np.flatnonzero(np.isin(labels, labels[near]) & ~checked)):
        checked[unchecked] = True
        near_left, near_right = query_pairs(tree, geometries[unchecked], tolerance)
        left, right = np.r_[left, unchecked[near_left]], np.r_[right, near_right]
        labels = _components(len(geometries), left, right)
    return labels


def snapped_at_antimeridian(geometries: np.ndarray) -> np.ndarray:
    """Whether each polar-CRS geometry lies within ``SNAP_M`` of the antimeridian: its group is unioned on the
    ``SNAP_M`` grid (``dissolve_groups``) and so needs distances when grouped (``snapped_groups``)."""
    return shapely.dwithin(np.asarray(geometries, dtype=object), ANTIMERIDIAN, SNAP_M)


def query_pairs(tree: shapely.STRtree, geometries: np.ndarray, distance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(index in ``geometries``, index in the tree) of every pair that intersects (``distance`` 0) or is within
    ``distance``, queried in chunks on all cores."""
    geometries = np.asarray(geometries, dtype=object)

    def chunk_pairs(rows: slice) -> np.ndarray:
        if distance > 0:
            pairs = tree.query(geometries[rows], predicate="dwithin", distance=distance)
        else:  # the same pairs, 1.4x faster
            pairs = tree.query(geometries[rows], predicate="intersects")
        return pairs + np.array([[rows.start], [0]])

    pairs = np.concatenate(map_in_threads(chunk_pairs, chunk_bounds(len(geometries))), axis=1)
    return pairs[0], pairs[1]


def clipped_intersection(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Row-wise intersection of geometries, each ``large`` one first cut to its ``small`` one's bounding box
    (``clip_by_rect``, linear and without noding): 4x faster than a plain overlay of an H3 cell with a coverage
    part of 10^5 vertices, the same areas to 1e-14 (benchmarks/database.py). Where that box is empty or flat,
    the plain intersection."""
    bounds = shapely.bounds(small)
    boxed = np.asarray(large, dtype=object).copy()
    for row in np.flatnonzero((bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1])):
        if boxed[row] is not None:
            boxed[row] = shapely.clip_by_rect(boxed[row], *bounds[row])
    return shapely.intersection(small, boxed)


def dissolve_groups(geometries: np.ndarray, labels: np.ndarray, snap_at_antimeridian: bool = True) -> np.ndarray:
    """Union per label (index = label); singletons are kept as they are, except at the antimeridian.

    Groups at the antimeridian are unioned on the ``SNAP_M`` grid, which closes the ~1e-9 m gap between the
    two halves of a split feature; elsewhere the floating-point union (robust in GEOS >= 3.9) is 2x faster.
    ``snap_at_antimeridian=False`` (geometries in another CRS than the polar one): every group as elsewhere.
    """
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    near_antimeridian = np.zeros(len(starts), dtype=bool)
    if snap_at_antimeridian:
        np.logical_or.at(near_antimeridian, labels, snapped_at_antimeridian(geometries))
    geometries = np.asarray(geometries, dtype=object)
    unions = geometries[order[starts]].copy()

    def union(group: int) -> shapely.Geometry:
        members = geometries[order[starts[group] : starts[group] + sizes[group]]]
        return shapely.union_all(members, grid_size=SNAP_M if near_antimeridian[group] else None)

    groups = np.flatnonzero((sizes > 1) | near_antimeridian)
    for group, geometry in zip(groups, map_in_batches(union, groups, sizes[groups]), strict=True):
        unions[group] = geometry
    return unions


def union_of_groups(
    geometries: np.ndarray, tolerance: float = 0.0, snap_at_antimeridian: bool = False
) -> shapely.MultiPolygon:
    """``union_all`` of polygonal geometries, computed per group of polygons closer than ``tolerance``
    (``touching_groups``; ``snapped_groups`` with ``snap_at_antimeridian``, then ``dissolve_groups``).

    The same polygons as one ``union_all`` (groups do not touch, so nothing joins across them; only slivers below
    ~1e-9 of the area that a global union's snapping drops may remain), but each overlay only sees one group:
    10x faster than ``ST_Union_Agg`` over the 74,000 Level-2 features of DARTS v1 (benchmarks/database.py). The
    defaults fit any CRS; the polar equal-area CRS uses ``SNAP_M`` and the antimeridian grid
    (``coverage.union_in_groups``).
    """
    parts = np.array(polygonal_parts(np.asarray(geometries, dtype=object)), dtype=object)
    if len(parts) == 0:
        return shapely.MultiPolygon()
    labels = snapped_groups(parts, tolerance) if snap_at_antimeridian else touching_groups(parts, tolerance)
    unions = dissolve_groups(parts, labels, snap_at_antimeridian=snap_at_antimeridian)
    return shapely.MultiPolygon(polygonal_parts(unions))


def _agreed(labels: np.ndarray, values: pd.Series) -> np.ndarray:
    """Per group, its value; distinct values within a group joined with ``;`` (sorted)."""
    codes, uniques = pd.factorize(values.astype(str), sort=True)
    distinct = pd.DataFrame({"group": labels, "code": codes}).drop_duplicates().sort_values(["group", "code"])
    agreed = np.asarray(uniques, dtype=object)[distinct.groupby("group")["code"].first().to_numpy()]
    mixed = distinct[distinct["group"].duplicated(keep=False)]
    for group, group_codes in mixed.groupby("group")["code"]:
        agreed[group] = ";".join(uniques[group_codes])
    return agreed


def _group_attributes(labels: np.ndarray, level1: pd.DataFrame) -> pd.DataFrame:
    """num_observations, earliest/latest date and the agreed version columns per group (index = label)."""
    date_codes, dates = pd.factorize(level1["date"].astype(str), sort=True)
    span = pd.Series(date_codes).groupby(labels).agg(["size", "min", "max"])
    attributes = pd.DataFrame(
        {
            "num_observations": span["size"].to_numpy(),
            "earliest_date": dates[span["min"].to_numpy()],
            "latest_date": dates[span["max"].to_numpy()],
        }
    )
    for column in AGREED_COLUMNS:
        attributes[column] = _agreed(labels, level1[column])
    return attributes


def _year_level2(level1: gpd.GeoDataFrame, crs: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Attributes (per group, indexed by label) and equal-area unions of one year's Level-1 features."""
    geometries = to_equal_area(level1.geometry, crs)
    labels = touching_groups(geometries)
    return _group_attributes(labels, level1), dissolve_groups(geometries, labels)


def _geohashes(geometries: np.ndarray, crs: str) -> np.ndarray:
    """12-character geohash of each equal-area centroid."""
    centroids = gpd.GeoSeries(shapely.centroid(geometries), crs=crs).to_crs(LONLAT_CRS)
    return geohashes(centroids.x.to_numpy(), centroids.y.to_numpy())


def geohashes(lon: np.ndarray, lat: np.ndarray, precision: int = 12) -> np.ndarray:
    """``level1.geohash`` of many points at once (the same interval halving, bit by bit, on arrays): str array."""
    values = (np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    low = [np.full(len(values[0]), -180.0), np.full(len(values[0]), -90.0)]
    high = [np.full(len(values[0]), 180.0), np.full(len(values[0]), 90.0)]
    codes = np.zeros((len(values[0]), precision), dtype=np.uint8)
    for bit in range(5 * precision):
        axis = bit % 2
        middle = (low[axis] + high[axis]) / 2
        upper = values[axis] >= middle
        low[axis], high[axis] = np.where(upper, middle, low[axis]), np.where(upper, high[axis], middle)
        codes[:, bit // 5] = (codes[:, bit // 5] << 1) | upper
    characters = np.frombuffer(GEOHASH_ALPHABET.encode(), dtype=np.uint8)[codes]
    return np.frombuffer(characters.tobytes(), dtype=f"S{precision}").astype(str)


def _empty_level2() -> gpd.GeoDataFrame:
    columns = {name: pd.Series(dtype="string") for name in LEVEL2_COLUMNS[:-1]}
    columns.update({name: pd.Series(dtype="int64") for name in ("id", "year", "num_observations")})
    columns.update({name: pd.Series(dtype="float64") for name in ("area_m2", "area_ha")})
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=LONLAT_CRS), crs=LONLAT_CRS)


def level2_features(level1: gpd.GeoDataFrame, params: ProductParams) -> gpd.GeoDataFrame:
    """The Level-2 GeoDataFrame (``LEVEL2_COLUMNS``, EPSG:4326) of Level-1 features of any number of years."""
    if level1.crs is None or not level1.crs.equals(LONLAT_CRS):
        raise ValueError(f"Level-1 features must be in {LONLAT_CRS}, got {level1.crs}")
    check_polar_crs(params.equal_area_crs)
    if level1.empty:
        return _empty_level2()
    attributes, unions = [], []
    for year, features in level1.groupby("year", sort=True):
        year_attributes, year_unions = _year_level2(features, params.equal_area_crs)
        attributes.append(year_attributes.assign(year=int(year)))
        unions.append(year_unions)
    frame = pd.concat(attributes, ignore_index=True)
    unions = np.concatenate(unions)
    area_m2 = shapely.area(unions)
    frame = frame.assign(
        id_geohash=pd.array(_geohashes(unions, params.equal_area_crs), dtype="string"),
        area_m2=area_m2,
        area_ha=area_m2 / SQUARE_METRES_PER_HECTARE,
        feature_information=pd.array([params.level2_information] * len(frame), dtype="string"),
    )
    geometry = gpd.GeoSeries(to_lonlat(unions, params.equal_area_crs), crs=LONLAT_CRS)
    result = gpd.GeoDataFrame(frame, geometry=geometry, crs=LONLAT_CRS)
    result = result.sort_values(["year", "id_geohash"], kind="stable", ignore_index=True)
    result["id"] = np.arange(len(result), dtype=np.int64)
    return _typed(result)


def _typed(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Table S3 column order and dtypes (pandas ``string`` for text, as Level 1)."""
    frame = frame[list(LEVEL2_COLUMNS)].copy()
    for column in ("id", "year", "num_observations"):
        frame[column] = frame[column].astype("int64")
    for column in ("id_geohash", "earliest_date", "latest_date", *AGREED_COLUMNS, "feature_information"):
        frame[column] = frame[column].astype("string")
    return frame
