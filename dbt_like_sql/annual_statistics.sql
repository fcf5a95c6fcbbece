-- Paper Table 1, one row per year: Level-1 coverage (gross km², the sum of the image footprints, overlaps counted
-- per image) and number of images, Level-2 coverage (km² of the annual union), Level-1 and Level-2 feature area
-- (km²) and count. Then a SUM row (column sums over the years) and a Union row: the area covered at least once
-- (coverage union) and the union of the Level-2 features of all years, each connected part one unique feature;
-- Level-1 columns are NULL there. Areas are the products' own area columns (area_km2, area_m2: computed in
-- EPSG:6931 before the geometries were written in lon/lat; area_km2() of the written geometries agrees to ~1e-10,
-- and reading the columns saves re-projecting 12 M coverage vertices at DARTS v1 size). The coverage products hold
-- unions already (one row per year, one row in all): their areas are summed, not unioned again; the features are
-- unioned with polygon_union (per group of intersecting features; ST_Union_Agg took minutes at DARTS v1 size) and
-- measured with area_km2() = ST_Area after ST_Transform to EPSG:6931.
WITH
l1_coverage AS (
    SELECT year, sum(area_km2) AS l1_coverage_km2, count(DISTINCT image_id) AS l1_images
    FROM {{ ref('coverage_level1') }}
    GROUP BY year
),
l2_coverage AS (  -- one row per year, already the annual union
    SELECT year, sum(area_km2) AS l2_coverage_km2
    FROM {{ ref('coverage_level2') }}
    GROUP BY year
),
l1 AS (
    SELECT year, sum(area_m2) / 1e6 AS l1_features_km2, count(*) AS l1_features
    FROM {{ ref('level1_features') }}
    GROUP BY year
),
l2 AS (
    SELECT year, sum(area_m2) / 1e6 AS l2_features_km2, count(*) AS l2_features
    FROM {{ ref('level2_features') }}
    GROUP BY year
),
per_year AS (
    SELECT
        CAST(year AS VARCHAR) AS period,
        CAST(year AS INTEGER) AS year,
        coalesce(l1_coverage_km2, 0) AS l1_coverage_km2,
        coalesce(l1_images, 0) AS l1_images,
        coalesce(l2_coverage_km2, 0) AS l2_coverage_km2,
        coalesce(l1_features_km2, 0) AS l1_features_km2,
        coalesce(l1_features, 0) AS l1_features,
        coalesce(l2_features_km2, 0) AS l2_features_km2,
        coalesce(l2_features, 0) AS l2_features
    FROM l1_coverage
    FULL JOIN l2_coverage USING (year)
    FULL JOIN l1 USING (year)
    FULL JOIN l2 USING (year)
),
sum_row AS (
    SELECT
        'SUM' AS period,
        NULL::INTEGER AS year,
        sum(l1_coverage_km2),
        CAST(sum(l1_images) AS BIGINT),
        sum(l2_coverage_km2),
        sum(l1_features_km2),
        CAST(sum(l1_features) AS BIGINT),
        sum(l2_features_km2),
        CAST(sum(l2_features) AS BIGINT)
    FROM per_year
),
all_features AS (
    SELECT ST_GeomFromWKB(polygon_union(list(ST_AsWKB(geometry)))) AS geometry FROM {{ ref('level2_features') }}
),
union_row AS (
    SELECT
        'Union (' || (SELECT min(year) FROM per_year) || '-' || (SELECT max(year) FROM per_year) || ')' AS period,
        NULL::INTEGER AS year,
        NULL::DOUBLE,
        NULL::BIGINT,
        (SELECT coalesce(sum(area_km2), 0) FROM {{ ref('coverage_union') }}),  -- one row: the union
        NULL::DOUBLE,
        NULL::BIGINT,
        coalesce(area_km2(geometry), 0),
        coalesce(ST_NumGeometries(geometry), 0)
    FROM all_features
)
SELECT * FROM per_year
UNION ALL SELECT * FROM sum_row
UNION ALL SELECT * FROM union_row
ORDER BY year NULLS LAST, period
