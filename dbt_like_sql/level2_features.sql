-- Level-2 features (paper Table S3): the Level-2 product, per year one row per connected part of the union of
-- the Level-1 footprints.
SELECT * FROM {{ source('products/features_level2') }}
