"""Temporal-recurrence filter of Level-2 features (paper, "Dataset improvement and outlook": compare the annual
features and require recurrence and slight changes, which stable rock outcrops, the main error source, lack).

Rule, per Level-2 feature f of year y (geometry work in ``ProductParams.equal_area_crs``, repaired):

- partners: the features of other years that intersect f (touching included);
- ``years_observed``: 1 + the number of distinct partner years;
- ``footprint_change``: the largest, over partner years y', of 1 - IoU(f, union of f's partners of y'): 0 for an
  identical footprint, near 1 for a small overlap; NaN without partners;
- ``years_covered``: the years whose coverage intersects f, y included (without coverage: every year present
  in the features);
- ``recurrent``: years_observed >= ``RecurrenceParams.min_years`` and footprint_change >=
  ``RecurrenceParams.min_footprint_change`` (0 by default: recurrence alone);
- ``testable``: years_covered >= min_years (f's place was looked at often enough to expect it again);
- ``keep``: recurrent, or untestable when ``RecurrenceParams.keep_untestable``.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from darts_core.level2 import to_equal_area
from darts_core.params import ProductParams, RecurrenceParams

RECURRENCE_COLUMNS = ("years_observed", "footprint_change", "years_covered", "recurrent", "testable", "keep")
EQUAL_AREA_CRS = ProductParams().equal_area_crs
DEFAULT_PARAMS = RecurrenceParams()


def cross_year_pairs(geometries: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(feature, partner) index pairs of intersecting features of different years, each direction once."""
    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    other_year = years[left] != years[right]
    return left[other_year], right[other_year]


def partner_unions(geometries: np.ndarray, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (feature, partner year): the union of the partners (columns feature, partner_year, union)."""
    rows = [
        (feature, partner_year, shapely.union_all(geometries[members.to_numpy()]))
        for (feature, partner_year), members in pairs.groupby(["feature", "partner_year"])["partner"]
    ]
    return pd.DataFrame(rows, columns=["feature", "partner_year", "union"])


def footprint_changes(geometries: np.ndarray, unions: pd.DataFrame, count: int) -> np.ndarray:
    """Per feature, the largest 1 - IoU with its partner-year unions (NaN without partners)."""
    largest = np.full(count, np.nan)
    if unions.empty:
        return largest
    own = geometries[unions["feature"].to_numpy()]
    other = unions["union"].to_numpy()
    overlap = shapely.area(shapely.intersection(own, other))
    union_area = shapely.area(own) + shapely.area(other) - overlap
    change = 1.0 - np.divide(overlap, union_area, out=np.zeros_like(overlap), where=union_area > 0)
    np.fmax.at(largest, unions["feature"].to_numpy(), change)
    return largest


def years_covered(geometries: np.ndarray, years: np.ndarray, coverage: gpd.GeoDataFrame | None, crs: str) -> np.ndarray:
    """Per feature, the number of years whose coverage intersects it (its own year always counts)."""
    if coverage is None:
        return np.full(len(geometries), len(np.unique(years)))
    covered = np.zeros(len(geometries), dtype=int)
    for year, rows in coverage.groupby(coverage["year"].astype(int)):
        area = shapely.union_all(to_equal_area(rows.geometry, crs))
        shapely.prepare(area)
        covered += (years == year) | shapely.intersects(geometries, area)
    covered += ~np.isin(years, coverage["year"].astype(int).unique())
    return covered


def recurrence_table(
    level2: gpd.GeoDataFrame,
    params: RecurrenceParams = DEFAULT_PARAMS,
    coverage: gpd.GeoDataFrame | None = None,
    crs: str = EQUAL_AREA_CRS,
) -> pd.DataFrame:
    """``RECURRENCE_COLUMNS`` per Level-2 feature (the rule in the module docstring), on the features' index.

    ``level2``: features of several years (a ``year`` column, any CRS); ``coverage``: rows with ``year`` and
    geometry (the Level-2 coverage), None = every year covered everywhere.
    """
    if level2.empty:
        return pd.DataFrame({name: pd.Series(dtype=float) for name in RECURRENCE_COLUMNS}, index=level2.index)
    geometries = to_equal_area(level2.geometry, crs)
    years = level2["year"].astype(int).to_numpy()
    feature, partner = cross_year_pairs(geometries, years)
    pairs = pd.DataFrame({"feature": feature, "partner": partner, "partner_year": years[partner]})
    observed = 1 + pairs.groupby("feature")["partner_year"].nunique().reindex(range(len(level2)), fill_value=0)
    change = footprint_changes(geometries, partner_unions(geometries, pairs), len(level2))
    table = pd.DataFrame(
        {
            "years_observed": observed.to_numpy(dtype=int),
            "footprint_change": change,
            "years_covered": years_covered(geometries, years, coverage, crs),
        },
        index=level2.index,
    )
    table["recurrent"] = (table["years_observed"] >= params.min_years) & (
        table["footprint_change"] >= params.min_footprint_change
    )
    table["testable"] = table["years_covered"] >= params.min_years
    table["keep"] = table["recurrent"] | (~table["testable"] & params.keep_untestable)
    return table[list(RECURRENCE_COLUMNS)]


def filter_recurrent(
    level2: gpd.GeoDataFrame,
    params: RecurrenceParams = DEFAULT_PARAMS,
    coverage: gpd.GeoDataFrame | None = None,
    crs: str = EQUAL_AREA_CRS,
) -> gpd.GeoDataFrame:
    """The Level-2 features that :func:`recurrence_table` keeps, columns unchanged."""
    return level2[recurrence_table(level2, params, coverage, crs)["keep"].to_numpy()]
