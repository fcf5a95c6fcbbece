"""Object-level validation of detections against reference features (design stage 12, paper Table 4).

Rules (all geometry work in ``ProductParams.equal_area_crs``, EPSG:6931, after repairing invalid geometries):

- Each region is an independent validation set. Its area is a polygon (``regions``; by default the convex hull
  of the region's reference features, see :func:`regions_from_references`).
- Counted detections of (region, year): the year's detections that intersect the region's area and meet the
  coverage rule (``ValidationParams.coverage_rule``: intersect, or lie within, the year's coverage).
- Counted references of (region, year): the region's reference features (``ValidationParams.reference_years``)
  that intersect the region's area and meet the coverage rule; points are first buffered geodesically by
  ``ValidationParams.point_buffer_m`` and the rule applies to the buffer.
- A counted detection is a true positive when it intersects (touching included) any of the region's reference
  features, counted or not (a feature partly outside the coverage is still a real slump); else a false
  positive. A counted reference is hit when it intersects a counted detection; else a false negative.
- precision = TP / (TP + FP); recall = references hit / counted references; F1 = harmonic mean of the two.
  An empty denominator gives 0 (as the paper's Table 4 for regions without features, and pixel_scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod, Transformer

from darts_core.level1 import LONLAT_CRS
from darts_core.level2 import make_valid_polygonal, to_equal_area
from darts_core.params import ProductParams, ValidationParams

EQUAL_AREA_CRS = ProductParams().equal_area_crs
DEFAULT_PARAMS = ValidationParams()
COUNT_COLUMNS = ("detections", "references", "true_positives", "false_positives", "references_hit", "false_negatives")
SCORE_COLUMNS = ("region", "year", "covered", *COUNT_COLUMNS, "precision", "recall", "f1")
PAIRWISE_COLUMNS = ("detected_by", "reference_set", *COUNT_COLUMNS, "precision", "recall", "f1")
DETECTION_OUTCOME_COLUMNS = ("detection", "region", "year", "true_positive")
REFERENCE_OUTCOME_COLUMNS = ("reference", "reference_id", "region", "year", "hit")
WGS84 = Geod(ellps="WGS84")


# --- scores ------------------------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; 0 when the denominator is 0."""
    return numerator / denominator if denominator else 0.0


def object_scores(true_positives: int, false_positives: int, references_hit: int, false_negatives: int) -> dict:
    """Precision (detections), recall (reference features) and their harmonic mean F1; 0 for empty denominators."""
    precision = ratio(true_positives, true_positives + false_positives)
    recall = ratio(references_hit, references_hit + false_negatives)
    return {"precision": precision, "recall": recall, "f1": ratio(2 * precision * recall, precision + recall)}


def match_by_intersection(detections: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(detection hits a reference, reference hit by a detection): boolean arrays, via an STRtree."""
    detection_hit = np.zeros(len(detections), dtype=bool)
    reference_hit = np.zeros(len(references), dtype=bool)
    if len(detections) and len(references):
        detection_index, reference_index = shapely.STRtree(references).query(detections, predicate="intersects")
        detection_hit[detection_index] = True
        reference_hit[reference_index] = True
    return detection_hit, reference_hit


# --- geometries in the equal-area CRS ----------------------------------------------------------------------


def geodesic_point_buffers(points: gpd.GeoSeries, radius_m: float, vertices: int, crs: str) -> np.ndarray:
    """Geodesic circles of ``radius_m`` around points (MultiPoints: one circle per part) as ``crs`` polygons.

    Vertices are computed on the WGS84 ellipsoid and projected directly, so circles are true to size in any CRS
    and across ±180°.
    """
    lonlat = points.to_crs(LONLAT_CRS).to_numpy()
    parts, owner = shapely.get_parts(lonlat, return_index=True)
    if len(parts) == 0:
        return np.array([shapely.Polygon()] * len(lonlat), dtype=object)
    azimuths = np.tile(np.linspace(0.0, 360.0, vertices, endpoint=False), len(parts))
    lon, lat, _ = WGS84.fwd(
        np.repeat(shapely.get_x(parts), vertices),
        np.repeat(shapely.get_y(parts), vertices),
        azimuths,
        np.full(azimuths.shape, radius_m),
    )
    x, y = Transformer.from_crs(LONLAT_CRS, crs, always_xy=True).transform(lon, lat)
    circles = shapely.polygons(np.stack([x, y], axis=-1).reshape(len(parts), vertices, 2))
    buffers = np.array([shapely.Polygon()] * len(lonlat), dtype=object)
    for index in np.unique(owner):
        buffers[index] = shapely.union_all(circles[owner == index])
    return buffers


def reference_geometries(references: gpd.GeoDataFrame, params: ValidationParams, crs: str) -> np.ndarray:
    """Reference features in ``crs``: polygons repaired, points buffered (``params.point_buffer_m``)."""
    geometries = np.empty(len(references), dtype=object)
    points = (references["geometry_kind"] == "point").to_numpy()
    if points.any():
        geometries[points] = geodesic_point_buffers(
            references.geometry[points], params.point_buffer_m, params.point_buffer_vertices, crs
        )
    if (~points).any():
        geometries[~points] = to_equal_area(references.geometry[~points], crs)
    return geometries


def dissolved(geometries: gpd.GeoSeries, crs: str) -> shapely.Geometry:
    """One prepared, valid geometry: the union of ``geometries`` in ``crs``."""
    union = shapely.union_all(to_equal_area(geometries, crs))
    union = make_valid_polygonal(np.array([union], dtype=object))[0]
    shapely.prepare(union)
    return union


def meets_coverage(geometries: np.ndarray, coverage: shapely.Geometry | None, rule: str) -> np.ndarray:
    """Whether each geometry intersects (or lies within) the prepared ``coverage``; all True without coverage."""
    if coverage is None:
        return np.ones(len(geometries), dtype=bool)
    if rule == "within":
        return shapely.within(geometries, coverage)
    return shapely.intersects(geometries, coverage)


# --- regions -----------------------------------------------------------------------------------------------


def regions_from_references(
    references: gpd.GeoDataFrame, params: ValidationParams = DEFAULT_PARAMS, crs: str = EQUAL_AREA_CRS
) -> gpd.GeoDataFrame:
    """One area per reference region: the convex hull of its (buffered) features, grown by
    ``params.region_hull_buffer_m``. Columns: region, geometry (``crs``)."""
    geometries = reference_geometries(references, params, crs)
    names, hulls = [], []
    for name, rows in references.groupby("region", sort=True).indices.items():
        names.append(str(name))
        hulls.append(
            shapely.buffer(shapely.convex_hull(shapely.union_all(geometries[rows])), params.region_hull_buffer_m)
        )
    return gpd.GeoDataFrame({"region": names}, geometry=hulls, crs=crs)


def _region_areas(regions: gpd.GeoDataFrame, reference_regions: set[str], crs: str) -> dict[str, shapely.Geometry]:
    """Prepared area per region name; every reference region needs one."""
    missing = reference_regions - set(regions["region"].astype(str))
    if missing:
        raise ValueError(f"reference regions without an area in `regions`: {sorted(missing)}")
    return {str(name): dissolved(rows.geometry, crs) for name, rows in regions.groupby("region", sort=True)}


# --- evaluation --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEvaluation:
    """Result of :func:`evaluate_objects`.

    - ``scores``: one row per (region, year), ``SCORE_COLUMNS``: ``covered`` (the year's coverage reaches the
      region's area at all; a region-year without it was not observed), counts and precision/recall/F1.
    - ``detections``: one row per counted detection per region, ``DETECTION_OUTCOME_COLUMNS``; ``detection`` is
      the row position in the detections handed in (``detections.iloc[...]``).
    - ``references``: one row per counted reference feature per year, ``REFERENCE_OUTCOME_COLUMNS``;
      ``reference`` is the row position in the references handed in.
    """

    scores: pd.DataFrame
    detections: pd.DataFrame
    references: pd.DataFrame


def _year_rule(references: gpd.GeoDataFrame, year: int, rule: str) -> np.ndarray:
    """References compared with ``year``: all, or those whose date range includes it (undated ones too)."""
    if rule == "all":
        return np.ones(len(references), dtype=bool)
    first, last = references["year_first"], references["year_last"]
    return ((first <= year) & (last >= year)).fillna(True).to_numpy(dtype=bool)


def _coverage_by_year(coverage: gpd.GeoDataFrame | None, years: list[int], crs: str) -> dict:
    """Prepared coverage per evaluated year (None = everything covered)."""
    if coverage is None:
        return dict.fromkeys(years)
    missing = sorted(set(years) - set(coverage["year"].astype(int)))
    if missing:
        raise ValueError(f"no coverage for the years {missing}")
    return {year: dissolved(coverage.geometry[coverage["year"].astype(int) == year], crs) for year in years}


def _evaluation_years(detections: gpd.GeoDataFrame, coverage: gpd.GeoDataFrame | None, years) -> list[int]:
    if years is not None:
        return sorted(int(year) for year in years)
    source = coverage if coverage is not None else detections
    return sorted(int(year) for year in source["year"].unique())


def compare(
    detections: np.ndarray, references: np.ndarray, counted_references: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Match ``detections`` (all counted) against all ``references`` and the counted references (a mask) against
    the detections: (TP per detection, hit per counted reference, counts and scores)."""
    counted = references[counted_references]
    true_positive, _ = match_by_intersection(detections, references)
    _, hit = match_by_intersection(detections, counted)
    counts = {
        "detections": len(detections),
        "references": len(counted),
        "true_positives": int(true_positive.sum()),
        "false_positives": int((~true_positive).sum()),
        "references_hit": int(hit.sum()),
        "false_negatives": int((~hit).sum()),
    }
    scores = object_scores(
        counts["true_positives"], counts["false_positives"], counts["references_hit"], counts["false_negatives"]
    )
    return true_positive, hit, {**counts, **scores}


@dataclass(frozen=True)
class _Prepared:
    """The inputs of :func:`evaluate_objects` in the equal-area CRS, with region membership."""

    detections: np.ndarray
    detection_years: np.ndarray
    references: np.ndarray
    reference_frame: gpd.GeoDataFrame
    areas: dict[str, shapely.Geometry]
    detection_in: dict[str, np.ndarray]  # per region: detection intersects its area
    reference_in: dict[str, np.ndarray]  # per region: reference of the region, intersecting its area


def _prepare(
    detections: gpd.GeoDataFrame,
    references: gpd.GeoDataFrame,
    regions: gpd.GeoDataFrame | None,
    params: ValidationParams,
    crs: str,
) -> _Prepared:
    regions = regions_from_references(references, params, crs) if regions is None else regions
    areas = _region_areas(regions, set(references["region"].astype(str)), crs)
    detection_geometries = to_equal_area(detections.geometry, crs)
    reference_geometries_ = reference_geometries(references, params, crs)
    region_of_reference = references["region"].astype(str).to_numpy()
    return _Prepared(
        detections=detection_geometries,
        detection_years=detections["year"].astype(int).to_numpy(),
        references=reference_geometries_,
        reference_frame=references,
        areas=areas,
        detection_in={region: shapely.intersects(detection_geometries, area) for region, area in areas.items()},
        reference_in={
            region: (region_of_reference == region) & shapely.intersects(reference_geometries_, area)
            for region, area in areas.items()
        },
    )


def _evaluate_year(
    inputs: _Prepared, year: int, coverage: shapely.Geometry | None, params: ValidationParams
) -> list[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """(scores row, detection outcomes, reference outcomes) per region for one year."""
    in_year = np.flatnonzero(inputs.detection_years == year)
    covered = np.zeros(len(inputs.detections), dtype=bool)
    covered[in_year] = meets_coverage(inputs.detections[in_year], coverage, params.coverage_rule)
    reference_covered = meets_coverage(inputs.references, coverage, params.coverage_rule)
    compared = _year_rule(inputs.reference_frame, year, params.reference_years)
    region_of_reference = inputs.reference_frame["region"].astype(str).to_numpy()
    results = []
    for region, area in inputs.areas.items():
        region_references = np.flatnonzero((region_of_reference == region) & compared)
        counted_detections = np.flatnonzero(covered & inputs.detection_in[region])
        counted_references = (reference_covered & inputs.reference_in[region])[region_references]
        true_positive, hit, counts = compare(
            inputs.detections[counted_detections], inputs.references[region_references], counted_references
        )
        counted_rows = region_references[counted_references]
        reached = coverage is None or bool(shapely.intersects(coverage, area))
        reference_ids = inputs.reference_frame["reference_id"].to_numpy()[counted_rows]
        results.append(
            (
                {"region": region, "year": year, "covered": reached, **counts},
                _rows(DETECTION_OUTCOME_COLUMNS, counted_detections, region, year, true_positive),
                _rows(REFERENCE_OUTCOME_COLUMNS, counted_rows, reference_ids, region, year, hit),
            )
        )
    return results


def evaluate_objects(
    detections: gpd.GeoDataFrame,
    references: gpd.GeoDataFrame,
    coverage: gpd.GeoDataFrame | None = None,
    regions: gpd.GeoDataFrame | None = None,
    years: Sequence[int] | None = None,
    params: ValidationParams = DEFAULT_PARAMS,
    crs: str = EQUAL_AREA_CRS,
) -> ObjectEvaluation:
    """Object-level scores per region and year (rules in the module docstring).

    ``detections``: polygons with a ``year`` column (Level 2: one row per feature and year), any CRS.
    ``references``: the schema of :mod:`validation.references`. ``coverage``: rows with ``year`` and geometry
    (the Level-2 coverage; several rows of a year are unioned); None = everything covered. ``regions``: rows
    with ``region`` and geometry; None = :func:`regions_from_references`. ``years``: default the coverage
    years, else the detection years.
    """
    years = _evaluation_years(detections, coverage, years)
    coverage_of = _coverage_by_year(coverage, years, crs)
    inputs = _prepare(detections, references, regions, params, crs)
    results = [result for year in years for result in _evaluate_year(inputs, year, coverage_of[year], params)]
    return ObjectEvaluation(
        scores=pd.DataFrame([result[0] for result in results], columns=list(SCORE_COLUMNS)),
        detections=_concat([result[1] for result in results], DETECTION_OUTCOME_COLUMNS),
        references=_concat([result[2] for result in results], REFERENCE_OUTCOME_COLUMNS),
    )


def _rows(columns: Sequence[str], *values: object) -> pd.DataFrame:
    return pd.DataFrame(dict(zip(columns, values, strict=True)), columns=list(columns))


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def false_positive_detections(evaluation: ObjectEvaluation, detections: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The false-positive detections (one row per detection, even when counted in several regions)."""
    outcomes = evaluation.detections
    rows = np.unique(outcomes.loc[~outcomes["true_positive"].astype(bool), "detection"].to_numpy(dtype=int))
    return detections.iloc[rows]


# --- pairwise comparison (e.g. the digitisation intercomparison) -------------------------------------------


def pairwise_object_scores(
    datasets: Mapping[str, gpd.GeoDataFrame],
    coverage: gpd.GeoDataFrame | None = None,
    params: ValidationParams = DEFAULT_PARAMS,
    crs: str = EQUAL_AREA_CRS,
) -> pd.DataFrame:
    """Every dataset as detections against every dataset as reference (e.g. the experts of a digitisation
    experiment), with the rules of :func:`evaluate_objects` in one area and year.

    ``datasets``: reference-schema frames; ``coverage``: the common area (rows unioned), None = everywhere.
    One row per ordered pair: ``PAIRWISE_COLUMNS`` (the two names, counts and scores).
    """
    area = None if coverage is None else dissolved(coverage.geometry, crs)
    geometries = {name: reference_geometries(frame, params, crs) for name, frame in datasets.items()}
    counted = {name: meets_coverage(values, area, params.coverage_rule) for name, values in geometries.items()}
    rows = []
    for detected_by, detections in geometries.items():
        for reference_name, references in geometries.items():
            _, _, counts = compare(detections[counted[detected_by]], references, counted[reference_name])
            rows.append({"detected_by": detected_by, "reference_set": reference_name, **counts})
    return pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))


def score_matrix(pairs: pd.DataFrame, score: str = "f1") -> pd.DataFrame:
    """One score of :func:`pairwise_object_scores` as a matrix: rows detected_by, columns reference_set."""
    return pairs.pivot(index="detected_by", columns="reference_set", values=score)
