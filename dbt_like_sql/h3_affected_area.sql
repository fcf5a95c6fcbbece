-- Paper Figure 9: per year and H3 cell (resolution var h3_resolution = 4), the Level-2 RTS/ALD feature area in the
-- cell, the cell's covered area (that year's Level-2 coverage) and affected_pct = 100 x feature area / covered area.
-- Cells: every cell whose polygon (straight lon/lat edges between the H3 vertices, so the cells tile exactly)
-- overlaps the year's coverage; 0 % where nothing was detected. Features are clipped to the cells: per year the cells'
-- rts_area_km2 add up to the Level-2 feature area (covered_km2 to the Level-2 coverage within ~0.05 %: clipping
-- adds vertices that the vertex-wise ST_Transform keeps). rts_count counts each feature once, in the H3 cell of a
-- point on its surface (H3 edges are great circles: within metres of an edge that may be the neighbour).
-- affected_pct is capped at 100 (rounding where features fill a cell's covered area). cell_area_km2: the cell
-- polygon in EPSG:6931 like covered_km2 (h3_cell_area_km2() gives H3's spherical area, ~0.05 % apart);
-- geometry: the cell polygon (lon/lat, split at the antimeridian).
-- Speed at DARTS v1 size (benchmarks/database.py): the coverage is clipped polygon by polygon (coverage_level2 has
-- one row per year, whose polygons do not overlap, so their clipped areas add up) and features and coverage
-- polygons meet cells through their H3 candidate cells (equality joins) instead of spatial predicates over all
-- pairs; only pairs whose boxes overlap are clipped (polygon_pieces: each coverage part read once and cut to each
-- cell's box before the overlay, 4x faster than ST_Intersection per pair); a feature inside the cell of its point
-- counts whole.
WITH
coverage_parts AS (
    SELECT year, row_number() OVER () AS part_id, part
    FROM (SELECT year, unnest(ST_Dump(geometry)).geom AS part FROM {{ ref('coverage_level2') }})
),
part_cells AS (
    SELECT year, part_id, unnest(h3_candidate_cells(ST_AsWKB(part), {{ var('h3_resolution') }})) AS h3_cell
    FROM coverage_parts
),
cells AS (
    SELECT year, h3_cell, ST_GeomFromWKB(h3_cell_boundary_wkb(h3_cell)) AS geometry
    FROM (SELECT DISTINCT year, h3_cell FROM part_cells)
),
part_cells_met AS (  -- per coverage part, the cells whose box meets its box
    SELECT pc.year, pc.part_id, list(pc.h3_cell) AS h3_cells, list(ST_AsWKB(c.geometry)) AS boundaries
    FROM part_cells AS pc
    JOIN cells AS c ON c.year = pc.year AND c.h3_cell = pc.h3_cell
    JOIN coverage_parts AS p ON p.part_id = pc.part_id
    WHERE ST_Intersects_Extent(c.geometry, p.part)
    GROUP BY pc.year, pc.part_id
),
pieces AS (  -- one UDF call per chunk of parts: each part read once for all its cells
    SELECT m.year, unnest(m.h3_cells) AS h3_cell, unnest(polygon_pieces(ST_AsWKB(p.part), m.boundaries)) AS piece
    FROM part_cells_met AS m
    JOIN coverage_parts AS p ON p.part_id = m.part_id
),
cell_coverage AS (
    SELECT c.year, c.h3_cell, any_value(c.geometry) AS geometry, sum(area_km2(ST_GeomFromWKB(p.piece))) AS covered_km2
    FROM pieces AS p
    JOIN cells AS c ON c.year = p.year AND c.h3_cell = p.h3_cell
    GROUP BY c.year, c.h3_cell
),
feature_points AS (
    SELECT year, geometry, h3_cell(ST_Y(point), ST_X(point), {{ var('h3_resolution') }}) AS point_cell
    FROM (SELECT year, geometry, ST_PointOnSurface(geometry) AS point FROM {{ ref('level2_features') }})
),
located AS (
    SELECT f.year, f.geometry, f.point_cell, coalesce(ST_Within(f.geometry, c.geometry), false) AS inside
    FROM feature_points AS f
    LEFT JOIN cell_coverage AS c ON c.year = f.year AND c.h3_cell = f.point_cell
),
straddling AS (
    SELECT year, geometry, unnest(h3_candidate_cells(ST_AsWKB(geometry), {{ var('h3_resolution') }})) AS h3_cell
    FROM located
    WHERE NOT inside
),
clipped AS (
    SELECT year, h3_cell, sum(rts_area_km2) AS rts_area_km2
    FROM (
        SELECT year, point_cell AS h3_cell, area_km2(geometry) AS rts_area_km2 FROM located WHERE inside
        UNION ALL
        SELECT f.year, f.h3_cell, area_km2(ST_Intersection(f.geometry, c.geometry))
        FROM straddling AS f
        JOIN cell_coverage AS c ON c.year = f.year AND c.h3_cell = f.h3_cell
        WHERE ST_Intersects_Extent(f.geometry, c.geometry)
    )
    GROUP BY ALL
),
counted AS (
    SELECT year, point_cell AS h3_cell, count(*) AS rts_count FROM feature_points GROUP BY ALL
)
SELECT
    CAST(year AS INTEGER) AS year,
    h3_cell,
    {{ var('h3_resolution') }} AS h3_resolution,
    area_km2(geometry) AS cell_area_km2,
    covered_km2,
    coalesce(rts_area_km2, 0) AS rts_area_km2,
    coalesce(rts_count, 0) AS rts_count,
    least(100.0, 100.0 * coalesce(rts_area_km2, 0) / covered_km2) AS affected_pct,
    geometry
FROM cell_coverage
LEFT JOIN clipped USING (year, h3_cell)
LEFT JOIN counted USING (year, h3_cell)
WHERE covered_km2 > 0
ORDER BY year, h3_cell
