-- Level-2 coverage: the coverage product with the annual union of the image footprints (one row per year).
SELECT * FROM {{ source('products/coverage_level2') }}
