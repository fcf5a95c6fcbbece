"""Terrain derivatives on a DEM grid (design brief stage 3): disk-mean relative elevation and Horn slope.

Pure numpy/scipy on arrays; the caller supplies pixel sizes in metres. Invalid elevations are NaN
(or flagged with ``valid``) and never enter a mean or a slope.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def disk_kernel(radius_px: float) -> np.ndarray:
    """1 for the pixels whose centres lie within ``radius_px`` of the centre pixel, else 0 (float64)."""
    if radius_px < 0:
        raise ValueError(f"disk radius must be >= 0 pixels, got {radius_px}")
    half = int(np.floor(radius_px))
    rows, cols = np.mgrid[-half : half + 1, -half : half + 1]
    return (rows * rows + cols * cols <= radius_px * radius_px).astype(np.float64)


def valid_elevations(dem: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Finite elevations, and inside ``valid`` when given."""
    finite = np.isfinite(dem)
    return finite if valid is None else finite & np.asarray(valid, dtype=bool)


def disk_mean(dem: np.ndarray, radius_px: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of the valid pixels within a disk (pixel centres within ``radius_px``) around every pixel.

    A normalised convolution done with FFTs (scipy.signal.fftconvolve), so the cost per pixel does not
    grow with the radius: sum(values * valid) / count(valid) over the disk. Pixels outside the array and
    invalid pixels do not count; where the disk holds no valid pixel the result is NaN. Values are centred
    on their mean before the transform to keep float64 round-off far below a millimetre; the counts are
    integers and are rounded back to them. Returns float64.
    """
    values = np.asarray(dem, dtype=np.float64)
    usable = valid_elevations(values, valid)
    if not usable.any():
        return np.full(values.shape, np.nan)
    offset = values[usable].mean()
    kernel = disk_kernel(radius_px)
    sums = fftconvolve(np.where(usable, values - offset, 0.0), kernel, mode="same")
    counts = np.rint(fftconvolve(usable.astype(np.float64), kernel, mode="same"))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts + offset
    mean[counts < 1] = np.nan
    return mean


def relative_elevation(
    dem: np.ndarray, pixel_size_m: float, radius_m: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """Elevation minus its disk mean of radius ``radius_m`` (square pixels); NaN where invalid (float32)."""
    values = np.asarray(dem, dtype=np.float64)
    usable = valid_elevations(values, valid)
    relative = values - disk_mean(values, radius_m / pixel_size_m, usable)
    relative[~usable] = np.nan
    return relative.astype(np.float32)


def slope_horn(dem: np.ndarray, pixel_size_x: float, pixel_size_y: float) -> np.ndarray:
    """Slope in degrees with Horn's (1981) 3x3 gradient, as ``gdaldem slope`` (default options) computes it.

    With the window ``a b c / d e f / g h i`` around ``e``:
    dz/dx = ((c + 2f + i) - (a + 2d + g)) / (8 * pixel_size_x),
    dz/dy = ((g + 2h + i) - (a + 2b + c)) / (8 * pixel_size_y),
    slope = atan(sqrt(dz/dx**2 + dz/dy**2)) in degrees. Like gdaldem without ``-compute_edges``, the
    one-pixel frame and every pixel whose window holds a NaN are NaN. Returns float32.
    """
    z = np.asarray(dem, dtype=np.float64)
    slope = np.full(z.shape, np.nan, dtype=np.float32)
    if z.shape[0] < 3 or z.shape[1] < 3:
        return slope
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dz_dx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * abs(pixel_size_x))
    dz_dy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8 * abs(pixel_size_y))
    slope[1:-1, 1:-1] = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    return slope
