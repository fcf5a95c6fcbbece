"""The helpers that run vectorised shapely/pyproj calls on all cores (darts_core.threads) and their users: results
must not depend on the number of threads or chunks, and equal the plain single calls they replace."""

from __future__ import annotations

import threading
from itertools import pairwise

import duckdb
import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely
from shapely.geometry import box

from darts_core import threads
from darts_core.level2 import clipped_intersection, dissolve_groups, query_pairs, reprojected
from darts_core.threads import MIN_CHUNK, chunk_bounds, in_chunks, map_in_batches, map_in_threads
from resources.duckdb import (
    KM_PER_DEGREE_LATITUDE,
    h3_candidate_cells,
    h3_cell_boundary_wkb,
    h3_outline,
    prepare_connection,
)


@pytest.fixture
def three_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split work into several chunks on any machine (one core included)."""
    monkeypatch.setattr(threads, "worker_count", lambda: 3)


def random_polygons(rng: np.random.Generator, count: int, extent: float, size: float) -> np.ndarray:
    """Buffered points (hexagons and finer) and boxes scattered over ``extent`` x ``extent``."""
    x, y = rng.uniform(0, extent, (2, count))
    radius = rng.uniform(0.1, 1.0, count) * size
    circles = shapely.buffer(shapely.points(x, y), radius, quad_segs=rng.integers(2, 8))
    boxes = shapely.box(x - radius, y - radius / 2, x + radius, y + radius / 2)
    return np.where(rng.random(count) < 0.5, circles, boxes)


def star(
    rng: np.random.Generator, x: float, y: float, radius: float, vertices: int, jitter: float, spikes: int = 0
) -> shapely.Polygon:
    """A star-shaped (hence simple) polygon around (x, y) with ``vertices`` randomly jagged vertices, ``spikes``
    of them pushed out by a tenth of the radius."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * (1 - jitter * rng.random(vertices))
    radii[rng.choice(vertices, spikes, replace=False)] *= 1.1
    return shapely.Polygon(np.column_stack([x + radii * np.cos(angles), y + radii * np.sin(angles)]))


# --- darts_core.threads ------------------------------------------------------------------------------------


def test_clipped_intersection_of_flat_or_empty_shapes_is_the_plain_one() -> None:
    small = np.array(
        [shapely.Point(1, 1), shapely.LineString([(0, 1), (5, 1)]), shapely.Polygon([(0, 0), (1, 1), (2, 2)]),
         shapely.Polygon()],
        dtype=object,
    )  # fmt: skip
    large = np.array([shapely.Point(0, 0).buffer(10)] * len(small), dtype=object)
    result, expected = clipped_intersection(small, large), shapely.intersection(small, large)
    assert all(shapely.equals_exact(result, expected)) and shapely.is_empty(result[-1])


@pytest.mark.parametrize("workers", [1, 4])
def test_map_in_threads_keeps_order_and_raises_the_first_error(monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    monkeypatch.setattr(threads, "worker_count", lambda: workers)
    names = set()

    def square(item: int) -> int:
        names.add(threading.current_thread().name)
        return item * item

    assert map_in_threads(square, list(range(50))) == [item * item for item in range(50)]
    assert any(name.startswith("darts-vector") for name in names) == (workers > 1)
    assert map_in_threads(square, []) == []
    assert map_in_threads(square, [7]) == [49]

    def fail_on_3_and_7(item: int) -> int:
        if item in (3, 7):
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 3"):
        map_in_threads(fail_on_3_and_7, list(range(10)))


@pytest.mark.parametrize("count", [0, 1, MIN_CHUNK - 1, MIN_CHUNK, 2 * MIN_CHUNK - 1, 2 * MIN_CHUNK, 1000, 12345])
@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 64])
def test_chunk_bounds_cover_the_rows_in_large_enough_chunks(count: int, chunks: int) -> None:
    bounds = chunk_bounds(count, chunks)
    assert 1 <= len(bounds) <= chunks
    assert bounds[0].start == 0 and bounds[-1].stop == count
    assert all(previous.stop == following.start for previous, following in pairwise(bounds))
    assert all(part.step is None and part.start <= part.stop for part in bounds)
    sizes = [part.stop - part.start for part in bounds]
    if count < MIN_CHUNK:
        assert bounds == [slice(0, count)]
    else:
        assert min(sizes) >= MIN_CHUNK
        assert len(bounds) == min(chunks, count // MIN_CHUNK)  # as many as allowed: the cores are used


def test_chunk_bounds_default_to_one_chunk_per_worker(three_workers: None) -> None:
    assert len(chunk_bounds(10 * MIN_CHUNK)) == 3
    assert len(chunk_bounds(2 * MIN_CHUNK)) == 2


def test_in_chunks_equals_one_call(three_workers: None) -> None:
    rng = np.random.default_rng(1)
    first, second = random_polygons(rng, 300, 100.0, 10.0), random_polygons(rng, 300, 100.0, 10.0)
    first[5], second[9] = None, None
    calls = []

    def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append(len(a))
        return shapely.intersection(a, b)

    result = in_chunks(intersection, first, second)
    expected = shapely.intersection(first, second)
    assert calls == [100, 100, 100]  # really split, in order
    assert len(result) == 300 and result[5] is None and result[9] is None
    assert shapely.to_wkb(result).tolist() == shapely.to_wkb(expected).tolist()
    assert not shapely.is_empty(result[shapely.intersects(first, second)]).any()

    empty = np.array([], dtype=object)
    assert len(in_chunks(shapely.intersection, empty, empty)) == 0
    assert in_chunks(np.add, np.arange(1000.0), np.ones(1000)).tolist() == (np.arange(1000.0) + 1).tolist()


def test_map_in_batches_keeps_input_order(three_workers: None) -> None:
    rng = np.random.default_rng(2)
    items = np.arange(100)
    calls: list[int] = []

    def labelled(item: int) -> tuple[int, str]:
        calls.append(int(item))
        return int(item), f"item {item}"

    for weights in (rng.permutation(100), np.arange(100), np.arange(100)[::-1], np.ones(100), rng.integers(0, 5, 100)):
        calls.clear()
        assert map_in_batches(labelled, items, weights) == [(item, f"item {item}") for item in range(100)]
        assert sorted(calls) == list(range(100))  # each item exactly once
    assert map_in_batches(labelled, [4], np.array([1])) == [(4, "item 4")]
    assert map_in_batches(labelled, np.array([], dtype=int), np.array([])) == []


# --- darts_core.level2 -------------------------------------------------------------------------------------


def pair_set(left: np.ndarray, right: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(left.tolist(), right.tolist(), strict=True))


def test_query_pairs_equals_a_plain_query(three_workers: None) -> None:
    rng = np.random.default_rng(3)
    geometries = random_polygons(rng, 500, 1000.0, 20.0)
    tree = shapely.STRtree(random_polygons(rng, 400, 1000.0, 20.0))
    left, right = query_pairs(tree, geometries)
    expected = tree.query(geometries, predicate="intersects")
    assert len(left) == expected.shape[1] > 100
    assert pair_set(left, right) == pair_set(*expected)
    for distance in (0.5, 15.0):
        left, right = query_pairs(tree, geometries, distance)
        expected = tree.query(geometries, predicate="dwithin", distance=distance)
        assert len(left) == expected.shape[1] and pair_set(left, right) == pair_set(*expected)
    nothing = query_pairs(tree, np.array([], dtype=object))
    assert len(nothing[0]) == len(nothing[1]) == 0


@pytest.mark.parametrize("shape", ["circle", "star"])
def test_clipped_intersection_equals_the_plain_intersection(shape: str) -> None:
    rng = np.random.default_rng(4)
    if shape == "circle":
        large = shapely.Point(0, 0).buffer(100.0, quad_segs=512)
    else:
        large = star(rng, 0.0, 0.0, 100.0, 5000, jitter=0.5)
    assert large.is_valid and len(large.exterior.coords) > 2000
    small = random_polygons(rng, 300, 300.0, 8.0)
    small = shapely.transform(small, lambda xy: xy - 150.0)  # around the large polygon, over and beyond its edge
    small = np.append(small, [None, box(0, 0, 1, 1), box(500, 500, 501, 501)])
    larges = np.array([large] * len(small), dtype=object)
    larges[-2] = None  # a None on either side gives None

    result = clipped_intersection(small, larges)
    expected = shapely.intersection(small, larges)
    assert result[-3] is None and result[-2] is None and expected[-3] is None
    present = np.flatnonzero(shapely.is_geometry(expected))
    assert np.array_equal(present, np.flatnonzero(shapely.is_geometry(result)))
    assert shapely.area(result[present]) == pytest.approx(shapely.area(expected[present]), rel=1e-9, abs=1e-12)
    disjoint = present[~shapely.intersects(small[present], larges[present])]
    assert len(disjoint) > 10 and shapely.is_empty(result[disjoint]).all()
    crossing = present[shapely.intersects(small[present], larges[present]) & ~shapely.within(small[present], large)]
    assert len(crossing) > 10  # pairs cut by the large polygon's edge


@pytest.mark.parametrize("workers", [1, 4])
def test_dissolve_groups_does_not_depend_on_the_threads(monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    rng = np.random.default_rng(5)
    squares, labels = [], []
    for group in range(200):  # overlapping squares per group, groups far apart, near (1e6, 1e6)
        x, y = 1e6 + 1000.0 * (group % 20), 1e6 + 1000.0 * (group // 20)
        for _ in range(rng.integers(1, 6)):
            dx, dy = rng.uniform(0, 50, 2)
            squares.append(box(x + dx, y + dy, x + dx + 100, y + dy + 100))
            labels.append(group)
    squares += [box(-50, 1e6, 0, 1e6 + 50), box(0, 1e6 + 10, 50, 1e6 + 60), box(-30, 2e6, 30, 2e6 + 30)]
    labels += [200, 200, 201]  # a feature split at the antimeridian (x = 0), one crossing it
    geometries, labels = np.array(squares, dtype=object), np.array(labels)

    monkeypatch.setattr(threads, "worker_count", lambda: 1)
    serial = dissolve_groups(geometries, labels)
    monkeypatch.setattr(threads, "worker_count", lambda: workers)
    parallel = dissolve_groups(geometries, labels)

    assert len(parallel) == 202
    assert shapely.to_wkb(parallel).tolist() == shapely.to_wkb(serial).tolist()
    expected = [shapely.union_all(geometries[labels == label]).area for label in range(202)]
    assert shapely.area(parallel) == pytest.approx(expected, rel=1e-9)
    assert parallel[200].geom_type == "Polygon"  # the two halves joined


def test_reprojected_equals_to_crs(three_workers: None) -> None:
    rng = np.random.default_rng(6)
    polygons = shapely.transform(random_polygons(rng, 200, 10.0, 0.5), lambda xy: xy + [140.0, 65.0])
    series = gpd.GeoSeries([*polygons, None, shapely.Polygon()], crs="EPSG:4326")
    result = reprojected(series, "EPSG:6931")
    expected = series.to_crs("EPSG:6931").values
    assert result[-2] is None and result[-1].is_empty
    assert shapely.equals_exact(result[:-2], np.asarray(expected[:-2]), tolerance=1e-6).all()


# --- resources.duckdb --------------------------------------------------------------------------------------


def arctic_shape() -> tuple[shapely.MultiPolygon, list[shapely.Polygon]]:
    """~2° lon/lat near 70°N: a round outline of 3000 vertices jagged below the simplification tolerance (1 % of an
    H3 edge, 3e-4° at resolution 6) with 30 spikes, a box with 3°-long straight edges (H3 draws great circles)
    and tiny squares far smaller than the tolerance."""
    rng = np.random.default_rng(7)
    jagged = star(rng, 150.0, 70.0, 0.6, 3000, jitter=3e-4, spikes=30)
    long_edges = box(151.0, 70.8, 154.0, 71.0)
    tiny = [box(x, y, x + 2e-5, y + 2e-5) for x, y in [(149.0, 70.9), (152.33, 70.5), (151.2, 69.3)]]
    return shapely.MultiPolygon([jagged, long_edges, *tiny]), tiny


@pytest.mark.parametrize("res", [4, 5, 6])
def test_h3_candidate_cells_contain_every_intersecting_cell(res: int) -> None:
    geometry, tiny = arctic_shape()
    assert geometry.is_valid
    candidates = set(h3_candidate_cells(shapely.to_wkb(geometry), res))
    overlap = h3.h3shape_to_cells_experimental(h3.geo_to_h3shape(geometry), res, contain="overlap")
    nearby = {ring_cell for cell in overlap for ring_cell in h3.grid_disk(cell, 2)}
    boundaries = shapely.from_wkb([h3_cell_boundary_wkb(cell) for cell in sorted(nearby)])
    intersecting = set(np.array(sorted(nearby))[shapely.intersects(boundaries, geometry)])
    assert len(intersecting) > 10
    assert intersecting <= candidates, sorted(intersecting - candidates)

    outline = h3_outline(geometry, res)
    assert len(shapely.get_coordinates(outline)) < len(shapely.get_coordinates(geometry)) / 3  # really simplified
    assert len(outline.geoms) == len(geometry.geoms)  # the tiny parts are kept whole
    for part in tiny:
        cell = h3.latlng_to_cell(part.centroid.y, part.centroid.x, res)
        assert cell in h3_candidate_cells(shapely.to_wkb(part), res)
        assert shapely.equals(h3_outline(part, res), part)


@pytest.mark.parametrize("res", [4, 6])
def test_h3_candidate_cells_of_small_features_contain_every_intersecting_cell(res: int) -> None:
    """Features below a quarter of an edge take the cells around one point: placed over cell corners and edges."""
    rng = np.random.default_rng(res)
    edge_deg = h3.average_hexagon_edge_length(res, unit="km") / KM_PER_DEGREE_LATITUDE
    centre = h3.latlng_to_cell(72.0, 179.5, res)
    corners = [(lon, lat) for cell in h3.grid_disk(centre, 2) for lat, lon in h3.cell_to_boundary(cell)]
    features = [
        shapely.Point(lon, lat).buffer(rng.uniform(0.01, 0.05) * edge_deg).buffer(0)
        for lon, lat in np.array(corners) + rng.normal(0, 0.02 * edge_deg, (len(corners), 2))
    ]
    met = 0
    for feature in features:
        candidates = set(h3_candidate_cells(shapely.to_wkb(feature), res))
        assert len(candidates) == 19  # the fast path: two rings around the cell of one point
        nearby = sorted(h3.grid_disk(h3.latlng_to_cell(feature.centroid.y, feature.centroid.x, res), 4))
        boundaries = shapely.from_wkb([h3_cell_boundary_wkb(cell) for cell in nearby])
        intersecting = set(np.array(nearby)[shapely.intersects(boundaries, feature)])
        met += len(intersecting) > 1
        assert intersecting <= candidates, sorted(intersecting - candidates)
    assert met > len(features) / 2  # most of them straddle cells


@pytest.mark.parametrize("res", [4, 5, 6])
def test_h3_candidate_cells_keep_a_cell_reached_below_the_tolerance(res: int) -> None:
    """A spike entering a neighbouring cell by less than the simplification tolerance: simplified away, its cell
    is still a candidate (the ring of neighbours)."""
    tolerance = 0.01 * h3.average_hexagon_edge_length(res, unit="km") / KM_PER_DEGREE_LATITUDE
    cell = h3.latlng_to_cell(70.0, 150.0, res)
    boundary = shapely.from_wkb(h3_cell_boundary_wkb(cell))
    start, end = np.asarray(boundary.exterior.coords)[:2]
    middle, along = (start + end) / 2, (end - start) / np.linalg.norm(end - start)
    out = np.array([along[1], -along[0]])
    out = out if np.dot(out, middle - np.asarray(boundary.centroid.coords[0])) > 0 else -out
    base = middle - 0.5 * tolerance * out  # a square inside the cell, a spike 0.8 tolerance high out of it
    corners = [base + side * 2 * tolerance * along for side in (-1, 1)]
    spike = [base + 0.1 * tolerance * along, middle + 0.3 * tolerance * out, base - 0.1 * tolerance * along]
    inner = [corner - 6 * tolerance * out for corner in corners]
    poke = shapely.Polygon([corners[0], *inner, corners[1], *spike])
    reached = [
        neighbour
        for neighbour in h3.grid_ring(cell, 1)
        if shapely.intersects(shapely.from_wkb(h3_cell_boundary_wkb(neighbour)), poke)
    ]
    assert poke.is_valid and len(reached) == 1
    assert not shapely.intersects(shapely.from_wkb(h3_cell_boundary_wkb(reached[0])), h3_outline(poke, res))
    assert {cell, reached[0]} <= set(h3_candidate_cells(shapely.to_wkb(poke), res))


def test_polygon_pieces_udf_equals_st_intersection() -> None:
    rng = np.random.default_rng(8)
    larges = [star(rng, 0.0, 0.0, 10.0, 2000, jitter=0.4), shapely.Point(0, 0).buffer(10.0, quad_segs=256), None]
    larges.append(box(0, 0, 1, 1))  # no list of others: NULL
    smalls = []
    for large_id in range(3):
        around = shapely.transform(random_polygons(rng, 40, 30.0, 2.0), lambda xy: xy - 15.0)
        smalls += [(large_id, small.wkt) for small in around]
    smalls.append((0, None))
    con = prepare_connection(duckdb.connect())
    try:
        con.execute("CREATE TABLE large_texts (id INTEGER, geom VARCHAR)")
        con.executemany("INSERT INTO large_texts VALUES (?, ?)", [(i, g and g.wkt) for i, g in enumerate(larges)])
        con.execute("CREATE TABLE small_texts (large_id INTEGER, geom VARCHAR)")
        con.executemany("INSERT INTO small_texts VALUES (?, ?)", smalls)
        con.execute("CREATE TABLE larges AS SELECT id, ST_GeomFromText(geom) AS geom FROM large_texts")
        con.execute(
            "CREATE TABLE smalls AS SELECT row_number() OVER () AS id, large_id, ST_GeomFromText(geom) AS geom "
            "FROM small_texts"
        )
        result = con.execute(
            """
            WITH lists AS (
                SELECT large_id, list(s.id ORDER BY s.id) AS ids, list(ST_AsWKB(s.geom) ORDER BY s.id) AS others,
                    list(ST_Area(ST_Intersection(s.geom, l.geom)) ORDER BY s.id) AS expected
                FROM smalls AS s JOIN larges AS l ON l.id = s.large_id
                GROUP BY large_id
            )
            SELECT l.id, g.ids, g.expected,
                list_transform(polygon_pieces(ST_AsWKB(l.geom), g.others), piece -> ST_Area(ST_GeomFromWKB(piece)))
            FROM larges AS l LEFT JOIN lists AS g ON g.large_id = l.id
            ORDER BY l.id
            """
        ).fetchall()
        empty = con.execute("SELECT polygon_pieces(ST_AsWKB(ST_MakeEnvelope(0, 0, 1, 1)), []::BLOB[])").fetchone()
        many = con.execute(  # several vectors of rows (the UDF is called per chunk), NULL lists among them
            "SELECT list_transform(polygon_pieces(ST_AsWKB(ST_Buffer(ST_Point(i, 0), 1)), others), "
            "piece -> ST_Area(ST_GeomFromWKB(piece))), "
            "list_transform(others, other -> ST_Area(ST_Intersection(ST_GeomFromWKB(other), "
            "ST_Buffer(ST_Point(i, 0), 1)))) "
            "FROM (SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE "
            "[ST_AsWKB(ST_MakeEnvelope(i + j - 1, 0, i + j + 2, 2)) for j in range(i % 4)] END AS others "
            "FROM range(5000) AS r(i))"
        ).fetchall()
    finally:
        con.close()
    assert [row[0] for row in result] == [0, 1, 2, 3]
    for (_, ids, expected, areas), count in zip(result[:2], (41, 40), strict=True):  # large 0: the NULL small too
        assert len(ids) == len(expected) == len(areas) == count
        present = [area is not None for area in expected]
        assert [area is not None for area in areas] == present
        assert np.array(areas)[present] == pytest.approx(np.array(expected)[present], rel=1e-9, abs=1e-12)
        assert 5 < sum(area > 0 for area in np.array(expected)[present]) < sum(present) - 5
    assert result[2][3] is None  # no geometry: NULL (DuckDB's NULL handling)
    assert result[3][1:] == (None, None, None)  # no list: NULL
    assert empty == ([],)
    assert len(many) == 5000 and sum(areas is None for areas, _ in many) == 1000
    assert all((areas is None) == (expected is None) for areas, expected in many)
    assert sum(len(areas) for areas, _ in many if areas is not None) == sum(i % 4 for i in range(5000) if i % 5)
    assert all(areas == pytest.approx(expected, rel=1e-9) for areas, expected in many if expected is not None)
    assert len({round(area, 6) for areas, _ in many if areas for area in areas}) == 3  # half, quarter, none


def test_worker_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_VARIABLE, "3")
    assert threads.worker_count() == 3
    for wrong in ("0", "two", "-1"):
        monkeypatch.setenv(threads.THREADS_VARIABLE, wrong)
        with pytest.raises(ValueError, match="DARTS_THREADS"):
            threads.worker_count()
    monkeypatch.delenv(threads.THREADS_VARIABLE)
    assert threads.worker_count() >= 1
