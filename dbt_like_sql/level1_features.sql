-- Level-1 features (paper Table S2): the Level-1 product, one row per RTS/ALD footprint detected on one image.
SELECT * FROM {{ source('products/features_level1') }}
