"""Ensemble, cleaning rules (invalid zone, size, water) and polygons."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.transform
import shapely
from affine import Affine
from scipy import ndimage

from darts_core.cleaning import (
    EDGE,
    KEPT,
    SMALL,
    WATER,
    clean_mask,
    disk_dilation,
    ensemble_mean,
    invalid_zone,
    polygonise,
)
from darts_core.params import CleaningParams

PARAMS = CleaningParams()  # threshold 0.5, zone 10 px, >= 32 px, water <= 0.2, 8-connectivity
SHAPE = (120, 160)
TRANSFORM = Affine(3.0, 0, 500_000.0, 0, -3.0, 7_500_000.0)
CRS = "EPSG:32608"


def blank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability 0.2 everywhere, all valid, no water."""
    return np.full(SHAPE, 0.2, np.float32), np.ones(SHAPE, bool), np.zeros(SHAPE, bool)


def reasons(result) -> dict[int, str]:
    return {stats.label: stats.reason for stats in result.objects}


def test_ensemble_mean():
    first, second = np.full((4, 5), 0.2, np.float32), np.full((4, 5), 0.9, np.float32)
    mean = ensemble_mean([first, second])
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, 0.55)
    with pytest.raises(ValueError):
        ensemble_mean([first, np.zeros((5, 4), np.float32)])
    with pytest.raises(ValueError):
        ensemble_mean([])


def test_disk_dilation_matches_the_euclidean_distance():
    rng = np.random.default_rng(1)
    mask = rng.random((80, 90)) > 0.995
    for radius in (0, 1, 3, 10):
        expected = ndimage.distance_transform_edt(~mask) <= radius
        np.testing.assert_array_equal(disk_dilation(mask, radius), expected)


def test_invalid_zone_is_a_disk_around_invalid_pixels_plus_a_frame():
    valid = np.ones(SHAPE, bool)
    valid[60, 80] = False
    zone = invalid_zone(valid, 10)
    assert zone[60, 90] and zone[66, 88]  # distance 10 and 10.0 (6, 8)
    assert not zone[60, 91] and not zone[68, 88]  # 11 and 11.3 (a square would include (8, 8))
    assert zone[:10].all() and zone[-10:].all() and zone[:, :10].all() and zone[:, -10:].all()
    assert not zone[10, 10:40].any() and not zone[30, 10]
    assert invalid_zone(np.ones(SHAPE, bool), 10).sum() == SHAPE[0] * SHAPE[1] - 100 * 140


def test_object_touching_the_invalid_zone_is_removed_whole():
    probability, valid, water = blank()
    valid[50:55, 100:105] = False  # a cloud
    probability[40:70, 30:95] = 0.9  # one object reaching within 5 px of the cloud
    probability[80:90, 40:60] = 0.9  # a clean object
    result = clean_mask(probability, valid, water, PARAMS)
    assert sorted(reasons(result).values()) == [EDGE, KEPT]
    assert not result.mask[40:70, 30:95].any()  # including the pixels far from the cloud
    assert result.mask[80:90, 40:60].all() and result.mask.sum() == 200


def test_object_in_the_image_frame_is_removed_but_one_just_inside_stays():
    probability, valid, water = blank()
    probability[9:20, 30:50] = 0.9  # row 9 lies in the 10 px frame
    probability[10:20, 70:90] = 0.9
    probability[30:40, 150:155] = 0.9  # right frame
    result = clean_mask(probability, valid, water, PARAMS)
    assert sorted(reasons(result).values()) == [EDGE, EDGE, KEPT]
    assert result.mask.sum() == 200 and result.mask[10:20, 70:90].all()


def test_minimum_object_size_31_goes_32_stays():
    probability, valid, water = blank()
    probability[20, 20:51] = 0.9  # 31 px line
    probability[40, 20:52] = 0.9  # 32 px line
    probability[60:64, 20:28] = 0.9  # 4 x 8 = 32 px block
    probability[80:84, 20:27] = 0.9  # 28 px ...
    probability[84, 26:29] = 0.9  # ... + 3 px joined diagonally: 31 px with 8-connectivity
    result = clean_mask(probability, valid, water, PARAMS)
    sizes = {stats.pixels: stats.reason for stats in result.objects}
    assert sizes == {31: SMALL, 32: KEPT}
    assert [stats.pixels for stats in result.objects] == [31, 32, 32, 31]
    assert result.mask.sum() == 64


def test_water_fraction_above_the_limit_goes():
    probability, valid, water = blank()
    probability[20:30, 20:30] = 0.9  # 100 px, 21 over water
    water[20:22, 20:30] = True
    water[22, 20] = True
    probability[20:30, 50:60] = 0.9  # 100 px, 19 over water
    water[20, 50:60] = True
    water[21, 50:59] = True
    probability[20:30, 80:90] = 0.9  # 100 px, exactly 20 %: kept (the rule is > 0.2)
    water[20:22, 80:90] = True
    water[40:60, 40:60] = True  # water outside objects does not count
    result = clean_mask(probability, valid, water, PARAMS)
    assert [(stats.reason, round(stats.water_fraction, 2)) for stats in result.objects] == [
        (WATER, 0.21),
        (KEPT, 0.19),
        (KEPT, 0.2),
    ]
    assert result.summary() == {"candidates": 3, KEPT: 2, EDGE: 0, SMALL: 0, WATER: 1}


def test_threshold_is_inclusive_and_invalid_pixels_are_never_foreground():
    probability, valid, water = blank()
    probability[20:30, 20:30] = 0.5
    probability[20:30, 60:70] = 0.9
    valid[20:30, 60:70] = False
    result = clean_mask(probability, valid, water, PARAMS)
    assert result.labels[25, 25] > 0 and result.labels[25, 65] == 0
    assert result.mask.sum() == 100


def test_polygons_are_valid_one_per_object_with_exact_areas():
    probability, valid, water = blank()
    probability[20:30, 20:30] = 0.9
    probability[25:28, 23:26] = 0.1  # a hole
    for step in range(40):  # a diagonal staircase: 8-connected only
        probability[40 + step, 30 + step] = 0.9
    probability[85:100, 100:140] = 0.9
    result = clean_mask(probability, valid, water, PARAMS)
    polygons = polygonise(result.mask, TRANSFORM, CRS)
    assert len(polygons) == len([stats for stats in result.objects if stats.kept]) == 3
    assert list(polygons.columns) == ["label", "geometry"] and polygons.crs == CRS
    assert polygons.geometry.is_valid.all()
    labels, _ = ndimage.label(result.mask, structure=np.ones((3, 3)))
    expected = np.bincount(labels.ravel())[1:] * 9.0
    np.testing.assert_allclose(polygons.area.to_numpy(), expected)
    assert polygons.geometry.iloc[0].geom_type == "Polygon" and len(polygons.geometry.iloc[0].interiors) == 1
    assert polygons.geometry.iloc[1].geom_type == "MultiPolygon"  # the staircase: 40 squares joined at corners
    for polygon, label in zip(polygons.geometry, polygons.label, strict=True):  # polygon covers its own pixels
        rows, cols = np.nonzero(labels == label)
        centres = shapely.points(*rasterio.transform.xy(TRANSFORM, rows, cols))
        assert shapely.contains(polygon, centres).all()


def test_four_connectivity_splits_diagonal_objects():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = True
    assert len(polygonise(mask, TRANSFORM, CRS)) == 1
    assert len(polygonise(mask, TRANSFORM, CRS, connectivity=4)) == 2


def test_empty_mask_gives_an_empty_frame():
    polygons = polygonise(np.zeros(SHAPE, bool), TRANSFORM, CRS)
    assert len(polygons) == 0 and list(polygons.columns) == ["label", "geometry"] and polygons.crs == CRS
    result = clean_mask(*blank(), PARAMS)
    assert result.objects == [] and not result.mask.any()
