-- Level-1 coverage: the coverage product with the valid-data footprint of every image (one row per image).
SELECT * FROM {{ source('products/coverage_level1') }}
