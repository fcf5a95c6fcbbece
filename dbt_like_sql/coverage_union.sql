-- Coverage union: the area covered at least once over the whole observation period.
SELECT * FROM {{ source('products/coverage_union') }}
