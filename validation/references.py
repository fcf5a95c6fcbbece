"""Reference datasets (design stage 12) read into one schema: ``REFERENCE_COLUMNS``, geometry in EPSG:4326.

- ``reference_id``: the dataset's own feature id where it has one (ARTS ``UID``), else ``"<dataset>:<row>"``;
  a repeated id gets ``#2``, ``#3``, ... from its second occurrence on (ARTS v5.0.0 repeats 43 UIDs: Taymyr
  slumps delineated for both 2011-2017 and 2018-2021, with different outlines).
- ``dataset``: a short name of the source; ``region``: from a named column of the source (``region_column``) or
  one name for the whole dataset (``region``). The area of a region, used to count detections, is given to
  :func:`validation.objects.evaluate_objects` (or derived there from the features of each region).
- ``year_first`` / ``year_last``: the calendar years of the first and last date of the source's date field
  (a date, a year, or a range ``"YYYY-MM-DD,YYYY-MM-DD"`` as in ARTS ``BaseMapDate``); ``year``: their common
  year where they agree, else missing (a feature mapped on a multi-year image mosaic has no single year).
- ``geometry_kind``: ``"polygon"`` or ``"point"`` (points are buffered when evaluated).

Rows without geometry are dropped; polygons crossing ±180° are split there (as Level 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from darts_core.level1 import LONLAT_CRS, split_antimeridian

REFERENCE_COLUMNS = (
    "reference_id",
    "dataset",
    "region",
    "year",
    "year_first",
    "year_last",
    "geometry_kind",
    "geometry",
)
POINT_TYPES = ("Point", "MultiPoint")
POLYGON_TYPES = ("Polygon", "MultiPolygon")
YEAR_PATTERN = re.compile(r"(?<!\d)(\d{4})(?:-\d{2}-\d{2}|\d{4})?(?!\d)")  # 2016, 2016-07-05 or 20160705


def years_of(value: object) -> tuple[int | None, int | None]:
    """First and last calendar year in a date field: a year, a date, a timestamp or a comma-separated range."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None, None
    if isinstance(value, int | np.integer | float | np.floating):
        return int(value), int(value)
    if isinstance(value, pd.Timestamp | np.datetime64):
        year = pd.Timestamp(value).year
        return year, year
    years = [int(match) for match in YEAR_PATTERN.findall(str(value))]
    return (min(years), max(years)) if years else (None, None)


def year_columns(dates: pd.Series | None, count: int) -> pd.DataFrame:
    """``year``, ``year_first`` and ``year_last`` (nullable Int64) of a date field (all missing when None)."""
    pairs = [years_of(value) for value in dates] if dates is not None else [(None, None)] * count
    first = pd.array([pair[0] for pair in pairs], dtype="Int64")
    last = pd.array([pair[1] for pair in pairs], dtype="Int64")
    year = pd.array(first, dtype="Int64")
    year[(first != last).fillna(True)] = pd.NA
    return pd.DataFrame({"year": year, "year_first": first, "year_last": last})


def geometry_kinds(geometries: gpd.GeoSeries) -> np.ndarray:
    """``"point"`` or ``"polygon"`` per geometry; other types are refused."""
    types = geometries.geom_type.to_numpy()
    unknown = sorted(set(types) - set(POINT_TYPES) - set(POLYGON_TYPES))
    if unknown:
        raise ValueError(f"reference geometries must be points or polygons, found {unknown}")
    return np.where(np.isin(types, POINT_TYPES), "point", "polygon")


def _lonlat(geometries: gpd.GeoSeries) -> gpd.GeoSeries:
    """EPSG:4326 geometries; polygons whose longitudes jump across ±180° split there."""
    lonlat = geometries.to_crs(LONLAT_CRS)
    bounds = lonlat.bounds
    crossing = ((bounds["maxx"] - bounds["minx"]) > 180.0).to_numpy()
    if crossing.any():
        values = lonlat.to_numpy().copy()
        values[crossing] = [split_antimeridian(geometry) for geometry in values[crossing]]
        lonlat = gpd.GeoSeries(values, index=geometries.index, crs=LONLAT_CRS)
    return lonlat


def unique_ids(ids: pd.Series) -> np.ndarray:
    """The ids as strings, a repeated one suffixed ``#<occurrence>`` from its second occurrence on."""
    ids = ids.astype(str).reset_index(drop=True)
    occurrence = ids.groupby(ids).cumcount() + 1
    return np.where(occurrence > 1, ids + "#" + occurrence.astype(str), ids)


def reference_frame(
    frame: gpd.GeoDataFrame,
    dataset: str,
    region_column: str | None = None,
    region: str | None = None,
    date_column: str | None = None,
    id_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Any point/polygon GeoDataFrame with a CRS in the reference schema (see the module docstring).

    Exactly one of ``region_column`` (a column holding each feature's region) and ``region`` (one name for all)
    is given.
    """
    if (region_column is None) == (region is None):
        raise ValueError("give exactly one of region_column (a column name) and region (one name for all)")
    if frame.crs is None:
        raise ValueError(f"reference dataset {dataset!r} has no CRS")
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    count = len(frame)
    ids = unique_ids(frame[id_column]) if id_column else [f"{dataset}:{row}" for row in range(count)]
    regions = frame[region_column].astype(str).to_numpy() if region_column else [region] * count
    years = year_columns(frame[date_column] if date_column else None, count)
    columns = {
        "reference_id": pd.array(ids, dtype="string"),
        "dataset": pd.array([dataset] * count, dtype="string"),
        "region": pd.array(regions, dtype="string"),
        **{name: years[name].array for name in ("year", "year_first", "year_last")},
        "geometry_kind": pd.array(geometry_kinds(frame.geometry), dtype="string"),
    }
    return gpd.GeoDataFrame(columns, geometry=_lonlat(frame.geometry).to_numpy(), crs=LONLAT_CRS)


def read_point_table(path: Path, lon_column: str, lat_column: str, crs: str = LONLAT_CRS) -> gpd.GeoDataFrame:
    """A CSV of point locations (``lon_column``/``lat_column`` in ``crs``) as a GeoDataFrame, other columns kept."""
    table = pd.read_csv(path)
    points = shapely.points(table[lon_column].to_numpy(float), table[lat_column].to_numpy(float))
    return gpd.GeoDataFrame(table, geometry=points, crs=crs)


def read_references(
    path: Path,
    dataset: str | None = None,
    region_column: str | None = None,
    region: str | None = None,
    date_column: str | None = None,
    id_column: str | None = None,
    layer: str | None = None,
    lon_column: str = "lon",
    lat_column: str = "lat",
    point_crs: str = LONLAT_CRS,
) -> gpd.GeoDataFrame:
    """A reference file (GeoJSON, shapefile, GeoPackage, ...; ``.csv``: points from lon/lat) in the schema.

    ``dataset`` defaults to the file name without suffix; see :func:`reference_frame` for the other arguments.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = read_point_table(path, lon_column, lat_column, point_crs)
    else:
        frame = gpd.read_file(path, layer=layer)
    return reference_frame(frame, dataset or path.stem, region_column, region, date_column, id_column)


def positive_features(frame: gpd.GeoDataFrame, class_column: str, positive: str = "Positive") -> gpd.GeoDataFrame:
    """Only the genuine RTS of an ARTS-schema dataset (``TrainClass`` 'Positive'; 'Negative' is background)."""
    return frame[frame[class_column] == positive]


def read_arts(path: Path) -> gpd.GeoDataFrame:
    """ARTS (Yang et al. 2024; GeoJSON, EPSG:3413): positive features; region ``RegionName``; years from
    ``BaseMapDate`` (the date or date range of the imagery the feature was delineated on); id ``UID``."""
    path = Path(path)
    frame = positive_features(gpd.read_file(path), "TrainClass")
    return reference_frame(frame, path.stem, region_column="RegionName", date_column="BaseMapDate", id_column="UID")


def read_van_der_sluijs_peel_plateau(path: Path, region: str = "Peel Plateau") -> gpd.GeoDataFrame:
    """Peel Plateau RTS polygons (van der Sluijs et al. 2023; ARTS schema with shapefile-truncated names): one
    region; years from ``BasMpDt`` (2004 airphotos, 2011 lidar, 2016 ArcticDEM: one year per feature)."""
    path = Path(path)
    frame = positive_features(gpd.read_file(path), "TrnClss")
    return reference_frame(frame, path.stem, region=region, date_column="BasMpDt")


def digitization_year(root: Path, site: str) -> int:
    """Year of the digitisation experiment's imagery of ``site``: the Sentinel-2 acquisition in its setup data."""
    images = sorted((Path(root) / "01_Setup" / site / "data").glob("S2_*.tif"))
    if not images:
        raise FileNotFoundError(f"no Sentinel-2 image in {root}/01_Setup/{site}/data")
    return int(images[0].name[3:7])


def digitization_aoi(root: Path, site: str) -> gpd.GeoDataFrame:
    """The 2.5 km area of interest the experts digitised in (``01_Setup/<site>/data/<site>_AOI_2500.geojson``)."""
    return gpd.read_file(Path(root) / "01_Setup" / site / "data" / f"{site}_AOI_2500.geojson")


def read_digitization_experiment(root: Path, site: str) -> dict[str, gpd.GeoDataFrame]:
    """Each expert's polygons of ``site`` ("Peel" or "Bykovsky"), keyed by expert ("#01".."#12"); experts who
    did not digitise the site are absent. Region = site; year = :func:`digitization_year`."""
    year = digitization_year(root, site)
    experts = {}
    for shapefile in sorted((Path(root) / "02_UserResults").glob(f"#*/{site}_digitized.shp")):
        expert = shapefile.parent.name
        frame = gpd.read_file(shapefile).assign(year=year)
        experts[expert] = reference_frame(frame, f"digitization {expert}", region=site, date_column="year")
    return experts
