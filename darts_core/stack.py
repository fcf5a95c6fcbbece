"""The model input stack (design stage 4): band order, normalisation, invalid pixels, GeoTIFF I/O.

normalised = (value + offset) / scale per band (``StackParams.normalisation``); pixels that are invalid
in the scene or non-finite in an auxiliary layer get ``StackParams.invalid_value``. The GeoTIFF has no
nodata value (0 is a legitimate normalised value): validity travels separately.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.io
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window

from darts_core.params import BandNormalisation, StackParams, as_metadata
from darts_core.planet import OpticalLayers, PlanetScene, classified_assets, read_optical
from darts_core.planet_catalogue import PlanetAssets, check_rasters
from darts_core.rasters import BLOCK_SIZE, Grid, bounded_gdal_cache, geotiff_writer, write_geotiff

DEFAULT_STACK_PARAMS = StackParams()
OPTICAL_BANDS = ("blue", "green", "red", "nir")  # PlanetScene.reflectance order
AUX_BANDS = ("relative_elevation", "slope")
TCVIS_BANDS = ("tc_brightness", "tc_greenness", "tc_wetness")
QUICKLOOK_MAX_PX = 512
QUICKLOOK_PERCENTILES = (2.0, 98.0)
STACK_BLOCK_ROWS = 2 * BLOCK_SIZE  # rows built and written at a time by write_stack_by_blocks


def build_input_stack(
    scene: PlanetScene | OpticalLayers,
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
    scene: PlanetScene | OpticalLayers,
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
    scene: PlanetScene | OpticalLayers,
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


def write_stack_by_blocks(
    assets: PlanetAssets,
    terrain_path: Path,
    tcvis_path: Path | None,
    path: Path,
    params: StackParams = DEFAULT_STACK_PARAMS,
    extra_tags: Mapping[str, Any] | None = None,
    block_rows: int = STACK_BLOCK_ROWS,
) -> float:
    """Build the stack of a scene's ``assets`` and write it atomically, ``block_rows`` rows at a time.

    The same stack as :func:`build_input_stack` + :func:`write_stack_geotiff`, but memory holds one block of
    rows of every layer, whatever the scene size. ``terrain_path`` (relative elevation, slope) and ``tcvis_path``
    must lie on the scene grid. Returns the fraction of pixels valid in the stack; an all-invalid stack raises
    ValueError (and is not written).
    """
    assets = classified_assets(assets, assets.udm2 or assets.udm)
    header = check_rasters(assets)
    grid = Grid(header.crs.to_string(), header.transform, header.shape[1], header.shape[0])
    tags = {**stack_tags(params), **(extra_tags or {})}
    valid_pixels = 0
    with ExitStack() as files:
        files.enter_context(bounded_gdal_cache())
        terrain = files.enter_context(_open_on_grid(terrain_path, grid, len(AUX_BANDS)))
        tcvis = files.enter_context(_open_on_grid(tcvis_path, grid, len(TCVIS_BANDS))) if tcvis_path else None
        sink = files.enter_context(geotiff_writer(path, grid, params.bands, "float32", None, tags))
        for row in range(0, grid.height, block_rows):
            window = Window(0, row, grid.width, min(block_rows, grid.height - row))
            relative_elevation, slope = terrain.read(window=window)
            tcvis_block = tcvis.read(window=window) if tcvis is not None else None
            block = build_input_stack(read_optical(assets, window), relative_elevation, slope, tcvis_block, params)
            valid_pixels += int((block != params.invalid_value).any(axis=0).sum())
            sink.write(block, window=window)
        if valid_pixels == 0:
            raise ValueError("no pixel is valid in both the scene and its auxiliary layers: refusing an empty stack")
    return valid_pixels / (grid.width * grid.height)


@contextmanager
def _open_on_grid(path: Path, grid: Grid, bands: int) -> Iterator[rasterio.io.DatasetReader]:
    """A raster that must lie on ``grid`` with ``bands`` bands (ValueError naming the file otherwise)."""
    with rasterio.open(path) as source:
        on_grid = source.shape == grid.shape and source.transform.almost_equals(grid.transform)
        if not on_grid or source.count != bands:
            raise ValueError(
                f"{Path(path).name}: {source.count} bands of {source.shape} do not match the scene grid "
                f"{grid.shape} with {bands} bands"
            )
        yield source


def read_quicklook_bands(path: Path) -> np.ndarray:
    """A stack GeoTIFF read at the reduced size of its quick-look (nearest neighbour, via GDAL's decimated read)."""
    with rasterio.open(path) as source:
        panels = 1 + sum(name in AUX_BANDS for name in source.descriptions)
        step = int(np.ceil(max(source.height, source.width * panels) / QUICKLOOK_MAX_PX))
        shape = (source.count, -(-source.height // step), -(-source.width // step))
        return source.read(out_shape=shape, resampling=Resampling.nearest)


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
