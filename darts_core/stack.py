"""The model input stack (design stage 4): band order, normalisation, invalid pixels, GeoTIFF I/O.

normalised = (value + offset) / scale per band (``StackParams.normalisation``); pixels that are invalid
in the scene or non-finite in an auxiliary layer get ``StackParams.invalid_value``. The GeoTIFF has no
nodata value (0 is a legitimate normalised value): validity travels separately.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from darts_core.params import BandNormalisation, StackParams, as_metadata
from darts_core.planet import PlanetScene
from darts_core.rasters import Grid, write_geotiff

DEFAULT_STACK_PARAMS = StackParams()
OPTICAL_BANDS = ("blue", "green", "red", "nir")  # PlanetScene.reflectance order
AUX_BANDS = ("relative_elevation", "slope")
TCVIS_BANDS = ("tc_brightness", "tc_greenness", "tc_wetness")
QUICKLOOK_MAX_PX = 512
QUICKLOOK_PERCENTILES = (2.0, 98.0)


def build_input_stack(
    scene: PlanetScene,
    relative_elevation: np.ndarray,
    slope: np.ndarray,
    tcvis: np.ndarray | None,
    params: StackParams = DEFAULT_STACK_PARAMS,
) -> np.ndarray:
    """The normalised float32 (C, H, W) stack in ``params.bands`` order (tcvis only needed if used)."""
    layers = _layers(scene, relative_elevation, slope, tcvis, params.bands)
    invalid = ~stack_validity(scene, relative_elevation, slope, tcvis, params)
    stack = np.empty((len(params.bands), *scene.shape), dtype=np.float32)
    for index, name in enumerate(params.bands):
        norm = params.normalisation[name]
        band = stack[index]
        band[...] = layers[name]
        if norm.offset:
            band += np.float32(norm.offset)
        band /= np.float32(norm.scale)
        np.copyto(band, np.float32(params.invalid_value), where=invalid)
    return stack


def stack_validity(
    scene: PlanetScene,
    relative_elevation: np.ndarray,
    slope: np.ndarray,
    tcvis: np.ndarray | None,
    params: StackParams = DEFAULT_STACK_PARAMS,
) -> np.ndarray:
    """Bool (H, W): the scene is valid and every auxiliary layer used by ``params.bands`` is finite."""
    layers = _layers(scene, relative_elevation, slope, tcvis, params.bands)
    valid = scene.valid.copy()
    for name in params.bands:
        if name in AUX_BANDS + TCVIS_BANDS and np.issubdtype(layers[name].dtype, np.floating):
            valid &= np.isfinite(layers[name])
    return valid


def _layers(
    scene: PlanetScene,
    relative_elevation: np.ndarray,
    slope: np.ndarray,
    tcvis: np.ndarray | None,
    bands: Sequence[str],
) -> dict[str, np.ndarray]:
    """Band name -> (H, W) view of its source array; raises ValueError naming a missing or misshapen layer."""
    layers = {"ndvi": scene.ndvi, **dict(zip(OPTICAL_BANDS, scene.reflectance, strict=True))}
    layers |= {"relative_elevation": relative_elevation, "slope": slope}
    if any(name in TCVIS_BANDS for name in bands):
        if tcvis is None:
            raise ValueError("tcvis is required by the bands " + ", ".join(n for n in bands if n in TCVIS_BANDS))
        _check_shape("tcvis", tcvis, (len(TCVIS_BANDS), *scene.shape))
        layers |= dict(zip(TCVIS_BANDS, tcvis, strict=True))
    unknown = [name for name in bands if name not in layers]
    if unknown:
        raise ValueError(f"unknown stack bands {unknown}")
    for name in ("relative_elevation", "slope"):
        _check_shape(name, layers[name], scene.shape)
    return layers


def _check_shape(name: str, layer: np.ndarray, expected: tuple[int, ...]) -> None:
    if layer.shape != expected:
        raise ValueError(f"{name} has shape {layer.shape}, expected {expected} (the scene grid)")


# --- GeoTIFF ---------------------------------------------------------------------------------------


def write_stack_geotiff(
    path: Path,
    stack: np.ndarray,
    crs: str,
    transform: Affine,
    params: StackParams = DEFAULT_STACK_PARAMS,
    extra_tags: Mapping[str, Any] | None = None,
) -> None:
    """Write the stack atomically: tiled, deflate + floating-point predictor, band names and DARTS tags.

    Tags: ``bands`` (JSON list), ``normalisation`` (JSON {band: {offset, scale}}), ``invalid_value``,
    ``darts_stack_params`` (all of StackParams) and ``extra_tags`` (non-strings stored as JSON).
    """
    if stack.ndim != 3 or stack.shape[0] != len(params.bands):
        raise ValueError(f"stack shape {stack.shape} does not match the {len(params.bands)} bands {params.bands}")
    grid = Grid(str(crs), transform, stack.shape[2], stack.shape[1])
    tags = {**stack_tags(params), **(extra_tags or {})}
    write_geotiff(Path(path), stack, grid, params.bands, nodata=None, tags=tags)


def stack_tags(params: StackParams) -> dict[str, Any]:
    """The dataset tags that describe a stack (values JSON-able)."""
    return {
        "bands": list(params.bands),
        "normalisation": {name: as_metadata(params.normalisation[name]) for name in params.bands},
        "invalid_value": params.invalid_value,
        "darts_stack_params": as_metadata(params),
    }


def read_stack_geotiff(path: Path) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...], dict[str, BandNormalisation]]:
    """(stack, rasterio profile, band names, normalisation) of a stack written by write_stack_geotiff."""
    bands, normalisation = read_stack_tags(path)
    with rasterio.open(path) as source:
        return source.read(), dict(source.profile), bands, normalisation


def read_stack_tags(path: Path) -> tuple[tuple[str, ...], dict[str, BandNormalisation]]:
    """(band names, normalisation) from a stack's tags, without reading pixels."""
    with rasterio.open(path) as source:
        tags = source.tags()
    if "bands" not in tags or "normalisation" not in tags:
        raise ValueError(f"{Path(path).name} has no 'bands'/'normalisation' tags: not a DARTS input stack")
    bands = tuple(json.loads(tags["bands"]))
    normalisation = {name: BandNormalisation(**values) for name, values in json.loads(tags["normalisation"]).items()}
    return bands, normalisation


# --- quick-look ------------------------------------------------------------------------------------


def stack_quicklook_png(stack: np.ndarray, bands: Sequence[str]) -> bytes:
    """A small PNG: true colour (red, green, blue) and, when present, relative elevation and slope panels.

    Each panel is stretched between the 2nd and 98th percentile of its non-zero pixels; the whole
    picture is at most ``QUICKLOOK_MAX_PX`` wide and high.
    """
    bands = list(bands)
    panels = [("red", "green", "blue")] + [(name,) * 3 for name in AUX_BANDS if name in bands]
    step = int(np.ceil(max(stack.shape[1], stack.shape[2] * len(panels)) / QUICKLOOK_MAX_PX))
    small = stack[:, ::step, ::step]
    images = [np.dstack([_stretch(small[bands.index(name)]) for name in names]) for names in panels]
    gap = np.full((small.shape[1], 2, 3), 255, dtype=np.uint8)
    picture = np.hstack([part for image in images for part in (image, gap)][:-1])
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _stretch(band: np.ndarray) -> np.ndarray:
    """uint8 with a percentile stretch over non-zero finite pixels (zeros = invalid stay black; a constant
    band is mid-grey)."""
    values = band[np.isfinite(band) & (band != 0)]
    if values.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(values, QUICKLOOK_PERCENTILES)
    scaled = np.clip((band - low) / (high - low), 0, 1) * 255 if high > low else np.full(band.shape, 128.0)
    return np.where(band != 0, scaled, 0).astype(np.uint8)
