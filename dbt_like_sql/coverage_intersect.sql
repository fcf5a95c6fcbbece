-- Coverage intersect: the area covered in every year of the core period (default 2021-2023).
SELECT * FROM {{ source('products/coverage_intersect') }}
