"""Ensemble, cleaning and polygons (design stage 7).

binary = ensemble probability >= threshold on valid pixels; objects are ``connectivity``-connected components.
An object is dropped whole when any of its pixels lies in the invalid zone (invalid pixels dilated by a
Euclidean disk of radius ``edge_zone_px``, as the DARTS code's ``disk`` erosion of the valid mask, plus an
image frame of ``edge_zone_px``), when it has fewer than ``min_object_px`` pixels, or when more than
``max_water_fraction`` of its pixels are water. Polygons trace the object pixels exactly, so the water
fraction per object equals the paper's polygon-area fraction over the water mask on the scene grid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import isqrt

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from darts_core.params import CleaningParams

KEPT = "kept"
EDGE = "invalid_zone"
SMALL = "too_small"
WATER = "water"


@dataclass(frozen=True)
class ObjectStats:
    """One candidate object (its value in ``CleanResult.labels``) and why it was kept or dropped."""

    label: int
    pixels: int
    water_fraction: float
    reason: str  # KEPT, or the first failed rule: EDGE, SMALL, WATER

    @property
    def kept(self) -> bool:
        return self.reason == KEPT


@dataclass(frozen=True)
class CleanResult:
    """The cleaned mask, the labels of all candidate objects (0 = background) and their stats."""

    mask: np.ndarray
    labels: np.ndarray
    objects: list[ObjectStats]

    def summary(self) -> dict[str, int]:
        """Object counts per reason (for asset metadata)."""
        counts = Counter(stats.reason for stats in self.objects)
        return {"candidates": len(self.objects), **{reason: counts[reason] for reason in (KEPT, EDGE, SMALL, WATER)}}


def ensemble_mean(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel-wise float32 mean of equally shaped probability rasters."""
    if not probabilities:
        raise ValueError("no probabilities to ensemble")
    total = np.zeros(probabilities[0].shape, dtype=np.float32)
    for probability in probabilities:
        if probability.shape != total.shape:
            raise ValueError(f"probability shapes differ: {probability.shape} != {total.shape}")
        total += probability
    total /= np.float32(len(probabilities))
    return total


def invalid_zone(valid: np.ndarray, edge_zone_px: int) -> np.ndarray:
    """Pixels within ``edge_zone_px`` (Euclidean) of an invalid pixel, plus a frame of ``edge_zone_px``."""
    zone = disk_dilation(~valid, edge_zone_px)
    if edge_zone_px > 0:
        zone[:edge_zone_px] = zone[-edge_zone_px:] = True
        zone[:, :edge_zone_px] = zone[:, -edge_zone_px:] = True
    return zone


def disk_dilation(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by the disk dx² + dy² <= radius², as the union of its inscribed rectangles.

    Each rectangle is two separable 1-D maximum filters, so the cost is O(pixels x rectangles), not
    O(pixels x disk area), and no float distance map of a whole scene is allocated.
    """
    source = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    dilated = np.zeros(mask.shape, dtype=bool)
    for half_height, half_width in disk_rectangles(radius):
        grown = ndimage.maximum_filter1d(source, 2 * half_height + 1, axis=0, mode="constant")
        grown = ndimage.maximum_filter1d(grown, 2 * half_width + 1, axis=1, mode="constant")
        dilated |= grown.view(bool)
    return dilated


def disk_rectangles(radius: int) -> list[tuple[int, int]]:
    """(half_height, half_width) of the widest rectangles whose union is the digital disk of ``radius``."""
    widest: dict[int, int] = {}
    for half_height in range(max(radius, 0) + 1):
        widest[isqrt(radius * radius - half_height * half_height)] = half_height
    return [(half_height, half_width) for half_width, half_height in widest.items()]


def structure(connectivity: int) -> np.ndarray:
    """The scipy.ndimage structuring element of 4- or 8-connectivity."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def clean_mask(probability: np.ndarray, valid: np.ndarray, water: np.ndarray, params: CleaningParams) -> CleanResult:
    """Threshold, label and filter objects (invalid zone, size, water fraction); see the module docstring."""
    binary = (probability >= params.threshold) & valid
    labels, count = ndimage.label(binary, structure=structure(params.connectivity))
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=count + 1)
    water_pixels = np.bincount(flat, weights=water.ravel().astype(np.float64), minlength=count + 1)
    in_zone = np.bincount(labels[invalid_zone(valid, params.edge_zone_px)], minlength=count + 1) > 0
    water_fraction = water_pixels / np.maximum(pixels, 1)
    objects = [
        ObjectStats(
            label,
            int(pixels[label]),
            float(water_fraction[label]),
            _reason(label, in_zone, pixels, water_fraction, params),
        )
        for label in range(1, count + 1)
    ]
    keep = np.zeros(count + 1, dtype=bool)
    keep[[stats.label for stats in objects if stats.kept]] = True
    return CleanResult(keep[labels], labels, objects)


def _reason(
    label: int, in_zone: np.ndarray, pixels: np.ndarray, water_fraction: np.ndarray, params: CleaningParams
) -> str:
    """The first rule that drops object ``label`` (invalid zone, size, water), else KEPT."""
    if in_zone[label]:
        return EDGE
    if pixels[label] < params.min_object_px:
        return SMALL
    if water_fraction[label] > params.max_water_fraction:
        return WATER
    return KEPT


def polygonise(mask: np.ndarray, transform: Affine, crs: object, connectivity: int = 8) -> gpd.GeoDataFrame:
    """One valid (Multi)Polygon per ``connectivity``-connected object of ``mask``, in ``crs``.

    Objects are labelled with scipy, traced with 4-connected ``rasterio.features.shapes`` (GDAL's 8-connected
    tracing makes self-touching rings) and the pieces of each label unioned, so pixels joined only at a
    corner give one MultiPolygon. Columns: ``label`` (1.., row-major order of first pixel) and geometry.
    """
    labels, _ = ndimage.label(mask, structure=structure(connectivity))
    pieces = rasterio.features.shapes(labels.astype(np.int32), mask=mask, connectivity=4, transform=transform)
    frame = gpd.GeoDataFrame(
        [{"label": int(value), "geometry": shapely.geometry.shape(geometry)} for geometry, value in pieces],
        columns=["label", "geometry"],
        geometry="geometry",
        crs=crs,
    )
    objects = frame.dissolve(by="label", as_index=False, sort=True) if len(frame) else frame
    objects["geometry"] = shapely.make_valid(objects.geometry.values, method="structure", keep_collapsed=False)
    return objects.astype({"label": "int64"}).reset_index(drop=True)
