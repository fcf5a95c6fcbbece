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
WITH
coverage AS (
    SELECT year, ST_Union_Agg(geometry) AS covered
    FROM {{ ref('coverage_level2') }}
    GROUP BY year
),
cells AS (
    SELECT year, covered, unnest(h3_candidate_cells(ST_AsWKB(covered), {{ var('h3_resolution') }})) AS h3_cell
    FROM coverage
),
cell_coverage AS (
    SELECT year, h3_cell, geometry, area_km2(ST_Intersection(geometry, covered)) AS covered_km2
    FROM (SELECT *, ST_GeomFromWKB(h3_cell_boundary_wkb(h3_cell)) AS geometry FROM cells)
),
clipped AS (
    SELECT c.year, c.h3_cell, sum(area_km2(ST_Intersection(f.geometry, c.geometry))) AS rts_area_km2
    FROM cell_coverage AS c
    JOIN {{ ref('level2_features') }} AS f ON f.year = c.year AND ST_Intersects(f.geometry, c.geometry)
    GROUP BY ALL
),
counted AS (
    SELECT year, h3_cell(ST_Y(point), ST_X(point), {{ var('h3_resolution') }}) AS h3_cell, count(*) AS rts_count
    FROM (SELECT year, ST_PointOnSurface(geometry) AS point FROM {{ ref('level2_features') }})
    GROUP BY ALL
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
