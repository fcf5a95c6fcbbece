"""Object-level validation: synthetic rules, the digitisation intercomparison, training labels vs ARTS and the
Peel Plateau polygons (checked against plain pairwise shapely loops), point references from ARTS centroids."""

from __future__ import annotations

import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod
from tabulate import tabulate

from darts_core.params import ValidationParams
from darts_core.scene_ids import scene_year
from validation.objects import (
    SCORE_COLUMNS,
    evaluate_objects,
    false_positive_detections,
    geodesic_point_buffers,
    object_scores,
    pairwise_object_scores,
    score_matrix,
)
from validation.references import (
    digitization_aoi,
    read_arts,
    read_digitization_experiment,
    read_van_der_sluijs_peel_plateau,
    reference_frame,
)
from validation.tables import table4, table4_markdown, year_summary

EQUAL_AREA = "EPSG:6931"
LABELS = Path("labels/ML_training_labels")
ARTS = Path("reference/ARTS/ARTS_v5.0.0.geojson")
PEEL = Path("reference/van_der_Sluijs_2022_PeelPlateau/MSI_2022_10_Sluijs2022_meta3.shp")
EXPERIMENT = Path("reference/digitization_experiment")
BANKS = "Banks Island and Victoria Island, Canada"
WGS84 = Geod(ellps="WGS84")


# --- helpers -----------------------------------------------------------------------------------------------


def square(x: float, y: float, size: float = 10.0) -> shapely.Polygon:
    return shapely.box(x, y, x + size, y + size)


def polygons(region: str, geometries: list, years: list | None = None) -> gpd.GeoDataFrame:
    """A reference-schema frame of polygons given in EPSG:6931."""
    frame = gpd.GeoDataFrame({"year": years or [None] * len(geometries)}, geometry=geometries, crs=EQUAL_AREA)
    return reference_frame(frame, "synthetic", region=region, date_column="year")


def detections(geometries: list, year: int = 2021) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"year": [year] * len(geometries)}, geometry=geometries, crs=EQUAL_AREA)


def covering(geometry: shapely.Geometry, year: int = 2021) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"year": [year]}, geometry=[geometry], crs=EQUAL_AREA)


def region_areas(**areas: shapely.Geometry) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"region": list(areas)}, geometry=list(areas.values()), crs=EQUAL_AREA)


def one_row(evaluation, region: str | None = None, year: int | None = None) -> dict:
    scores = evaluation.scores
    if region is not None:
        scores = scores[scores["region"] == region]
    if year is not None:
        scores = scores[scores["year"] == year]
    assert len(scores) == 1
    return scores.iloc[0].to_dict()


def equal_area(frame: gpd.GeoDataFrame) -> list:
    """Plain shapely geometries in EPSG:6931, each repaired on its own."""
    return [shapely.make_valid(geometry) for geometry in frame.to_crs(EQUAL_AREA).geometry]


def brute_force(detected: list, references: list, coverage: shapely.Geometry, area: shapely.Geometry) -> dict:
    """The counts by pairwise loops: detections/references counted where they intersect coverage and area."""
    counted_detections = [d for d in detected if d.intersects(coverage) and d.intersects(area)]
    counted_references = [r for r in references if r.intersects(coverage) and r.intersects(area)]
    true_positives = sum(any(d.intersects(r) for r in references) for d in counted_detections)
    hit = sum(any(r.intersects(d) for d in counted_detections) for r in counted_references)
    return {
        "detections": len(counted_detections),
        "references": len(counted_references),
        "true_positives": true_positives,
        "false_positives": len(counted_detections) - true_positives,
        "references_hit": hit,
        "false_negatives": len(counted_references) - hit,
    }


# --- real data ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels(shared_data: Path) -> gpd.GeoDataFrame:
    """All training labels (iterations 001-006) as detections: image_id, region, year (of image_date)."""
    frames = [
        gpd.read_file(path)[["image_id", "image_date", "region", "geometry"]]
        for path in sorted((shared_data / LABELS).glob("*/TrainingLabel_*.gpkg"))
    ]
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    return frame.assign(year=frame["image_date"].str[:4].astype(int))


@pytest.fixture(scope="module")
def footprints(shared_data: Path) -> gpd.GeoDataFrame:
    """The labelled images' footprints (iterations 002-006) with the year of their Planet item id."""
    frames = [gpd.read_file(path) for path in sorted((shared_data / LABELS).glob("*/ImageFootprints_*.gpkg"))]
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    return frame.assign(year=[scene_year(item_id) for item_id in frame["image_id"]])


@pytest.fixture(scope="module")
def arts(shared_data: Path) -> gpd.GeoDataFrame:
    return read_arts(shared_data / ARTS)


@pytest.fixture(scope="module")
def peel(shared_data: Path) -> gpd.GeoDataFrame:
    return read_van_der_sluijs_peel_plateau(shared_data / PEEL)


def footprints_of(footprints: gpd.GeoDataFrame, labels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The footprints of the labels' images (iteration 005 labels carry item ids cut to 30 characters)."""
    ids = tuple(labels["image_id"].unique())
    return footprints[[image_id.startswith(ids) for image_id in footprints["image_id"]]]


def label_hull_coverage(labels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Iteration 001 has no image footprints: a stand-in coverage per year, the convex hull of each image's labels."""
    grouped = labels.to_crs(EQUAL_AREA).groupby("image_id")
    hulls = grouped.geometry.agg(lambda shapes: shapely.GeometryCollection(list(shapes)).convex_hull)
    return gpd.GeoDataFrame({"year": grouped["year"].first()}, geometry=hulls.to_numpy(), crs=EQUAL_AREA)


# --- scores and matching rules (synthetic) -----------------------------------------------------------------


def test_scores_and_zero_denominators() -> None:
    assert object_scores(3, 1, 2, 2) == pytest.approx({"precision": 0.75, "recall": 0.5, "f1": 0.6})
    assert object_scores(0, 0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert object_scores(0, 4, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert object_scores(2, 0, 0, 0) == {"precision": 1.0, "recall": 0.0, "f1": 0.0}


def test_invalid_multipart_and_touching_geometries_match() -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting: two triangles
    assert not bowtie.is_valid
    references = polygons(
        "r",
        [
            square(10, 2, 4),  # touches the bowtie's right lobe along x = 10
            shapely.MultiPolygon([square(100, 0), square(200, 0)]),  # multi-part, hit through its second part
            square(400, 0),  # missed
        ],
    )
    detected = detections([bowtie, square(205, 5), square(300, 0), square(410.01, 0)])  # last: 1 cm from a reference
    evaluation = evaluate_objects(detected, references, regions=region_areas(r=shapely.box(-1e3, -1e3, 1e3, 1e3)))
    row = one_row(evaluation)
    assert (row["true_positives"], row["false_positives"]) == (2, 2)
    assert (row["references_hit"], row["false_negatives"]) == (2, 1)
    outcome = evaluation.detections.sort_values("detection")
    assert outcome["true_positive"].tolist() == [True, True, False, False]
    assert false_positive_detections(evaluation, detected).index.tolist() == [2, 3]


def test_coverage_rules_and_reference_years() -> None:
    references = polygons(
        "r",
        [square(0, 0), square(95, 0), square(300, 0), square(500, 0)],  # inside, across the edge, outside x 2
        years=["2016", "2020-07-01,2021-08-01", "2016", None],
    )
    detected = detections([square(2, 2), square(90, 2, 8), square(90, 50, 20), square(302, 2)])
    coverage = covering(shapely.box(-50, -50, 100, 100))
    area = region_areas(r=shapely.box(-1e3, -1e3, 1e3, 1e3))
    intersects = one_row(evaluate_objects(detected, references, coverage, area))
    # counted: detections 0-2 (the third crosses the edge), references 0-1; the detection crossing the edge hits
    # nothing; the one at x=90 hits the reference across the edge
    assert intersects == {
        "region": "r",
        "year": 2021,
        "covered": True,
        "detections": 3,
        "references": 2,
        "true_positives": 2,
        "false_positives": 1,
        "references_hit": 2,
        "false_negatives": 0,
        **object_scores(2, 1, 2, 0),
    }
    within = one_row(
        evaluate_objects(detected, references, coverage, area, params=ValidationParams(coverage_rule="within"))
    )
    assert (within["detections"], within["references"], within["true_positives"]) == (2, 1, 2)  # still a TP
    overlapping = ValidationParams(reference_years="overlapping")
    evaluation = evaluate_objects(detected, references, coverage, area, params=overlapping)
    assert evaluation.references["reference"].tolist() == [1]  # 2016 features are not compared with 2021
    assert one_row(evaluation)["true_positives"] == 1
    undated = evaluate_objects(detected, references, None, area, params=overlapping).references
    assert sorted(undated["reference"]) == [1, 3]  # without coverage all count; the undated one too


def test_regions_are_independent_validation_sets() -> None:
    references = pd.concat(
        [polygons("west", [square(0, 0), square(50, 0)]), polygons("east", [square(1000, 0)])], ignore_index=True
    )
    detected = detections([square(2, 2), square(1002, 2), square(1100, 0), square(480, 0, 40)])
    areas = region_areas(west=shapely.box(-100, -100, 500, 100), east=shapely.box(490, -100, 1200, 100))
    evaluation = evaluate_objects(detected, references, regions=areas)
    west, east = one_row(evaluation, "west"), one_row(evaluation, "east")
    assert (west["detections"], west["true_positives"], west["references_hit"]) == (2, 1, 1)  # 4th on the border
    assert (east["detections"], east["true_positives"], east["references_hit"]) == (3, 1, 1)
    assert sorted(evaluation.detections["detection"]) == [0, 1, 2, 3, 3]
    derived = evaluate_objects(detected, references)  # regions: convex hulls of each region's references
    assert one_row(derived, "west")["detections"] == 1 and one_row(derived, "east")["detections"] == 1
    with pytest.raises(ValueError, match="without an area"):
        evaluate_objects(detected, references, regions=areas.iloc[:1])
    with pytest.raises(ValueError, match="no coverage"):
        evaluate_objects(detected, references, covering(shapely.box(0, 0, 1, 1), year=2020), areas, years=[2021])


# --- the digitisation intercomparison (12 experts, two sites) ----------------------------------------------


def expert_brute_force(experts: dict, aoi: shapely.Geometry) -> pd.DataFrame:
    """Pairwise counts by plain loops (every expert as detections against every expert as reference)."""
    shapes = {name: equal_area(frame) for name, frame in experts.items()}
    rows = []
    for detected_by, detected in shapes.items():
        for reference_set, references in shapes.items():
            counts = brute_force(detected, references, aoi, aoi)
            rows.append({"detected_by": detected_by, "reference_set": reference_set, **counts})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("site", ["Peel", "Bykovsky"])
def test_digitisation_experts_pairwise(shared_data: Path, site: str) -> None:
    root = shared_data / EXPERIMENT
    experts = read_digitization_experiment(root, site)
    aoi = digitization_aoi(root, site)
    pairs = pairwise_object_scores(experts, aoi)
    f1 = score_matrix(pairs, "f1")
    print(f"\nObject-level F1, {site}: rows = expert as detections, columns = expert as reference")
    print(tabulate(f1, headers="keys", tablefmt="github", floatfmt=".2f"))

    assert list(f1.index) == list(f1.columns) == list(experts)
    assert np.allclose(np.diag(f1), 1.0)  # every polygon hits itself
    swapped = pairs.set_index(["reference_set", "detected_by"]).sort_index()
    pairs = pairs.set_index(["detected_by", "reference_set"]).sort_index()
    # precision(A vs B) = share of A's polygons touching one of B's = recall(B vs A); F1 is symmetric
    assert np.array_equal(pairs["precision"].to_numpy(), swapped["recall"].to_numpy())
    assert np.array_equal(pairs["true_positives"].to_numpy(), swapped["references_hit"].to_numpy())
    assert np.allclose(f1.to_numpy(), f1.to_numpy().T)
    expected = expert_brute_force(experts, aoi.to_crs(EQUAL_AREA).union_all())
    expected = expected.set_index(["detected_by", "reference_set"]).sort_index()
    assert pairs[expected.columns].equals(expected)

    off_diagonal = f1.to_numpy()[~np.eye(len(f1), dtype=bool)]
    if site == "Peel":  # many slumps: experts broadly agree on which exist
        assert off_diagonal.min() >= 0.6
    else:  # three experts mapped entirely different features
        isolated = ["#02", "#11", "#12"]
        assert (f1.loc[isolated].drop(columns=isolated) == 0).all().all()
        assert (f1.drop(index=isolated, columns=isolated).to_numpy() >= 0.9).all()


# --- training labels against ARTS and the Peel Plateau polygons --------------------------------------------


def test_labels_against_arts_match_brute_force(labels: gpd.GeoDataFrame, arts: gpd.GeoDataFrame) -> None:
    banks = labels[labels["region"] == "Banks_Island"]  # iteration 001, 2018 and 2019
    coverage = label_hull_coverage(banks)
    evaluation = evaluate_objects(labels, arts, coverage)
    scores = evaluation.scores.set_index(["region", "year"])
    assert set(scores.index) == {(region, year) for region in arts["region"].unique() for year in (2018, 2019)}
    others = scores.drop(index=BANKS, level="region")
    assert (others["detections"] == 0).all() and (others[["precision", "recall", "f1"]] == 0).all().all()
    assert scores.loc[BANKS, "covered"].all() and not others["covered"].any()

    references = arts[arts["region"] == BANKS]
    reference_shapes = equal_area(references)
    area = shapely.MultiPolygon([part for shape in reference_shapes for part in getattr(shape, "geoms", [shape])])
    for year in (2018, 2019):
        detected = equal_area(labels[labels["year"] == year])
        covered = shapely.union_all(coverage.geometry[coverage["year"] == year].to_numpy())
        expected = brute_force(detected, reference_shapes, covered, area.convex_hull)
        assert scores.loc[(BANKS, year), list(expected)].to_dict() == expected
    assert scores.loc[(BANKS, 2019), "precision"] > 0.9  # labels are slumps; ARTS is not exhaustive (recall)


def test_labels_against_peel_plateau_with_real_footprints(
    labels: gpd.GeoDataFrame, footprints: gpd.GeoDataFrame, peel: gpd.GeoDataFrame
) -> None:
    peel_labels = labels[labels["region"] == "Peel Plateau"]
    coverage = footprints_of(footprints, peel_labels)
    assert sorted(coverage["year"]) == [2021, 2022, 2022]
    evaluation = evaluate_objects(peel_labels, peel, coverage)
    area = shapely.MultiPolygon(
        [part for shape in equal_area(peel) for part in getattr(shape, "geoms", [shape])]
    ).convex_hull
    for year in (2021, 2022):
        covered = shapely.union_all(equal_area(coverage[coverage["year"] == year]))
        expected = brute_force(equal_area(peel_labels[peel_labels["year"] == year]), equal_area(peel), covered, area)
        assert {name: one_row(evaluation, year=year)[name] for name in expected} == expected
    assert one_row(evaluation, year=2022)["true_positives"] > 0


def test_table4_layout_from_real_evaluations(
    labels: gpd.GeoDataFrame, footprints: gpd.GeoDataFrame, arts: gpd.GeoDataFrame, peel: gpd.GeoDataFrame
) -> None:
    peel_labels = labels[labels["region"] == "Peel Plateau"]
    peel_scores = evaluate_objects(peel_labels, peel, footprints_of(footprints, peel_labels)).scores
    banks = labels[labels["region"] == "Banks_Island"]
    arts_scores = evaluate_objects(banks, arts[arts["region"] == BANKS], label_hull_coverage(banks)).scores
    scores = pd.concat(
        [arts_scores.assign(validation_set="ARTS"), peel_scores.assign(validation_set="van der Sluijs")],
        ignore_index=True,
    )
    table = table4(scores)
    markdown = table4_markdown(table)
    print("\nTraining labels as detections (Table 4 layout)\n" + markdown)
    print(year_summary(scores).round(3).to_string(index=False))

    assert list(table["region"]) == [BANKS, "Peel Plateau"]
    assert list(table["years"]) == ["2018-2019", "2022"]  # the 2021 Peel image lies outside the reference area
    observed = scores[scores["covered"]]
    for _, row in table.iterrows():
        rows = observed[observed["region"] == row["region"]]
        for score in ("precision", "recall", "f1"):
            assert row[f"{score}_mean"] == pytest.approx(rows[score].mean())
            assert row[f"{score}_sd"] == pytest.approx(rows[score].std(ddof=1), nan_ok=True)
        for count in ("true_positives", "false_positives", "false_negatives"):
            assert row[count] == rows[count].sum()
    header = [cell.strip() for cell in markdown.splitlines()[0].strip("|").split("|")]
    assert header == [
        "Val Set",
        "Sub Region",
        "Years",
        "Precision",
        "Recall",
        "F1",
        "TP",
        "FP",
        "FN",
        "Reference features [#]",
    ]
    assert " ± " in markdown.splitlines()[2] and " ± " not in markdown.splitlines()[3]  # Peel: one year
    assert len(markdown.splitlines()) == 2 + len(table)
    single_year = table4(scores[scores["year"].isin([2019, 2022])])
    assert single_year["f1_sd"].isna().all() and "±" not in table4_markdown(single_year)


# --- point references: ARTS centroids buffered by 500 m ----------------------------------------------------


def arts_centroid_points(shared_data: Path, region: str) -> gpd.GeoDataFrame:
    raw = gpd.read_file(shared_data / ARTS)
    raw = raw[raw["RegionName"] == region]
    points = gpd.GeoDataFrame(
        raw[["UID", "RegionName"]],
        geometry=gpd.points_from_xy(raw["CentroidLon"].astype(float), raw["CentroidLat"].astype(float)),
        crs="EPSG:4326",
    )
    return reference_frame(points, "ARTS centroids", region_column="RegionName", id_column="UID")


def squares_at_distance(points: gpd.GeoDataFrame, distance_m: float, half_m: float = 10.0) -> gpd.GeoDataFrame:
    """A 2*half_m square centred ``distance_m`` north-east of each point (geodesic)."""
    lon, lat, _ = WGS84.fwd(
        points.geometry.x, points.geometry.y, np.full(len(points), 45.0), np.full(len(points), distance_m)
    )
    centres = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326").to_crs(EQUAL_AREA)
    return detections(list(shapely.box(centres.x - half_m, centres.y - half_m, centres.x + half_m, centres.y + half_m)))


def test_point_buffers_are_geodesic_circles(shared_data: Path) -> None:
    points = arts_centroid_points(shared_data, BANKS)
    circles = geodesic_point_buffers(points.geometry, 500.0, 64, EQUAL_AREA)
    regular_64_gon = 0.5 * 64 * 500.0**2 * np.sin(2 * np.pi / 64)
    assert np.allclose(shapely.area(circles), regular_64_gon, rtol=1e-3)  # equal-area CRS keeps areas
    centres = points.to_crs(EQUAL_AREA).geometry.to_numpy()
    assert shapely.contains(circles, centres).all()


def test_point_references_buffer_and_coverage(shared_data: Path) -> None:
    points = arts_centroid_points(shared_data, BANKS)
    projected = points.to_crs(EQUAL_AREA).geometry
    spacing = projected.geometry.apply(lambda point: projected.distance(point).nsmallest(2).iloc[1])
    isolated = points[(spacing > 1100.0).to_numpy()]  # squares near them are > 500 m from every other point
    assert len(isolated) == 37
    near, far = squares_at_distance(isolated, 480.0), squares_at_distance(isolated, 530.0)  # edges ~470 / ~520 m
    everywhere = region_areas(**{BANKS: shapely.box(-1e7, -1e7, 1e7, 1e7)})  # not only the points' convex hull
    near_scores = one_row(evaluate_objects(near, points, regions=everywhere))
    assert near_scores["true_positives"] == near_scores["detections"] == near_scores["references_hit"] == 37
    assert near_scores["false_negatives"] == len(points) - 37
    far_scores = one_row(evaluate_objects(far, points, regions=everywhere))
    assert far_scores["false_positives"] == 37 and far_scores["references_hit"] == 0
    smaller = one_row(evaluate_objects(near, points, regions=everywhere, params=ValidationParams(point_buffer_m=450.0)))
    assert smaller["true_positives"] == 0

    # coverage: everything left of the points' median x (EPSG:6931); a point counts when its buffer reaches in
    middle = float(np.median(projected.x))
    coverage = covering(shapely.box(middle - 1e6, -1e7, middle, 1e7))
    detected = squares_at_distance(points, 480.0)
    evaluation = evaluate_objects(detected, points, coverage)
    counted = set(evaluation.references["reference"])
    offset = projected.x - middle
    assert set(np.flatnonzero(offset <= 0)) <= counted  # inside
    assert counted.isdisjoint(np.flatnonzero(offset > 520))  # beyond the buffer: not counted
    reaching_in = np.flatnonzero((offset > 0) & (offset < 480))
    assert len(reaching_in) > 0 and counted >= set(reaching_in)  # outside, but the buffer reaches in
    row = one_row(evaluation)
    assert row["false_negatives"] == len(counted) - row["references_hit"]
    within = evaluate_objects(detected, points, coverage, params=ValidationParams(coverage_rule="within"))
    assert set(within.references["reference"]) >= set(np.flatnonzero(offset < -520))  # whole buffer inside
    reaching_out = np.flatnonzero(offset > -480)
    assert (offset[reaching_out] <= 0).any() and set(within.references["reference"]).isdisjoint(reaching_out)


# --- the real DARTS v1 coverage (43 polygons, crossing the antimeridian) -------------------------------------


def test_references_restricted_to_the_real_darts_v1_coverage(shared_data: Path, arts: gpd.GeoDataFrame) -> None:
    coverage = gpd.read_parquet(shared_data / "darts_v1/DARTS_NitzeEtAl_v1_coverage_2018_2023_union.parquet")
    coverage = coverage.assign(year=2021)[["year", "geometry"]]
    nothing = detections([], 2021)
    counted = evaluate_objects(nothing, arts, coverage).scores.set_index("region")["references"]
    covered = shapely.union_all([shapely.make_valid(shape) for shape in coverage.to_crs(EQUAL_AREA).geometry])
    shapes = equal_area(arts)
    expected = pd.Series([shape.intersects(covered) for shape in shapes]).groupby(arts["region"].to_numpy()).sum()
    assert counted.to_dict() == expected.to_dict() and counted.sum() == 2149  # of 2276
    within = evaluate_objects(nothing, arts, coverage, params=ValidationParams(coverage_rule="within"))
    inside = pd.Series([shape.within(covered) for shape in shapes]).groupby(arts["region"].to_numpy()).sum()
    assert within.scores.set_index("region")["references"].to_dict() == inside.to_dict()

    points = arts_centroid_points(shared_data, "Northern Taymyr Peninsula in Siberia, Russia")
    counted_points = set(evaluate_objects(nothing, points, coverage).references["reference"])
    distance = points.to_crs(EQUAL_AREA).distance(covered).to_numpy()
    assert set(np.flatnonzero(distance < 490)) <= counted_points  # the 500 m buffer reaches the coverage
    assert counted_points <= set(np.flatnonzero(distance < 510))
    assert len(counted_points) > (distance == 0).sum()


# --- size -----------------------------------------------------------------------------------------------------


def test_120000_detections_quickly() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.uniform(-2.0e6, -1.9e6, 120_000), rng.uniform(-5.0e5, -4.0e5, 120_000)
    detected = gpd.GeoDataFrame(
        {"year": rng.integers(2021, 2024, x.size)}, geometry=shapely.box(x, y, x + 60, y + 40), crs=EQUAL_AREA
    ).to_crs("EPSG:4326")
    rx, ry = rng.uniform(-2.0e6, -1.9e6, 3000), rng.uniform(-5.0e5, -4.0e5, 3000)
    references = polygons("all", list(shapely.box(rx, ry, rx + 150, ry + 150)))
    coverage = gpd.GeoDataFrame(
        {"year": [2021, 2022, 2023]}, geometry=[shapely.Point(-1.95e6, -4.5e5).buffer(4e4, 64)] * 3, crs=EQUAL_AREA
    )
    started = time.perf_counter()
    evaluation = evaluate_objects(detected, references, coverage)
    assert time.perf_counter() - started < 30.0
    hits = gpd.sjoin(detected.to_crs(EQUAL_AREA), references.to_crs(EQUAL_AREA), predicate="intersects")
    covered = detected.to_crs(EQUAL_AREA).intersects(coverage.geometry[0])
    for year, row in evaluation.scores.set_index("year").iterrows():
        in_year = covered & (detected["year"] == year)
        assert row["detections"] == in_year.sum()
        assert row["true_positives"] == in_year[in_year].index.isin(hits.index).sum()
    assert set(evaluation.scores.columns) == set(SCORE_COLUMNS)
