"""PlanetScope ingestion (design stage 2): reflectance, NDVI, pixel validity and the data footprint.

Validity per mask kind:

* ``udm2`` (8 bands): valid = clear and unusable (band 8) == 0 and none of snow / shadow / heavy haze /
  cloud; light haze is allowed (bands from :class:`~darts_core.params.PlanetParams`).
* ``udm`` (legacy 1-band Unusable Data Mask, Planet Imagery Product Specification; the same bits are
  udm2 band 8): bit 0 blackfill, bit 1 cloud, bits 2-6 missing or suspect blue / green / red /
  red-edge / NIR data, bit 7 unused. A pixel is usable only when the value is 0 (no bit set).
* ``none`` (no mask file given): valid = SR data present only; clouds are NOT masked and
  :attr:`PlanetScene.warning` says so.

Every kind also excludes SR nodata (any band == nodata). A scene without a single valid pixel is an
error, never an all-zero stack.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
import shapely.geometry
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from darts_core.params import PlanetParams
from darts_core.planet_catalogue import ITEM_TYPES, PlanetAssets, SceneInputError, check_rasters, raster_header

logger = logging.getLogger(__name__)

DEFAULT_PLANET_PARAMS = PlanetParams()
MASK_KINDS = {8: "udm2", 1: "udm"}  # mask band count -> mask kind
NO_MASK_WARNING = "no udm2/udm mask: validity = SR data present, clouds and haze are not masked"


@dataclass(frozen=True)
class PlanetScene:
    """One PlanetScope scene on its own grid, ready for stacking."""

    item_id: str
    item_type: str  # "PSScene" | "PSOrthoTile"
    acquired: dt.datetime  # UTC
    crs: str
    transform: Affine
    width: int
    height: int
    reflectance: np.ndarray  # float32 (4, H, W): blue, green, red, nir; 0 where invalid
    ndvi: np.ndarray  # float32 (H, W) in [-1, 1]; 0 where invalid
    valid: np.ndarray  # bool (H, W)
    footprint: shapely.Polygon | shapely.MultiPolygon  # where SR data is present, scene CRS
    mask_kind: str  # "udm2" | "udm" | "none"
    valid_fraction: float  # valid pixels / all pixels of the raster
    warning: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


# --- masks -----------------------------------------------------------------------------------------


def udm2_valid(udm2: np.ndarray, params: PlanetParams = DEFAULT_PLANET_PARAMS) -> np.ndarray:
    """Valid pixels of an (8, H, W) udm2: clear, usable, and none of the excluding classes."""
    if udm2.ndim != 3 or udm2.shape[0] != 8:
        raise ValueError(f"udm2 must have shape (8, H, W), got {udm2.shape}")
    clear = udm2[params.udm2_clear_band - 1] == 1
    usable = udm2[params.udm2_unusable_band - 1] == 0
    excluded = np.any(udm2[[band - 1 for band in params.udm2_excluding_bands]] != 0, axis=0)
    return clear & usable & ~excluded


def udm_valid(udm: np.ndarray) -> np.ndarray:
    """Valid pixels of a legacy (H, W) UDM: no bit set (see the module docstring for the bits)."""
    if udm.ndim != 2:
        raise ValueError(f"udm must have shape (H, W), got {udm.shape}")
    return udm == 0


# --- reading ---------------------------------------------------------------------------------------


def read_planet_assets(assets: PlanetAssets, params: PlanetParams = DEFAULT_PLANET_PARAMS) -> PlanetScene:
    """Read a scene found by :func:`~darts_core.planet_catalogue.find_planet_assets` (udm2 preferred)."""
    mask_path = assets.udm2 or assets.udm
    return read_planet_scene(assets.sr, mask_path, assets.metadata, assets.item_id, params)


def read_planet_scene(
    sr_path: Path,
    mask_path: Path | None,
    metadata_path: Path,
    item_id: str | None = None,
    params: PlanetParams = DEFAULT_PLANET_PARAMS,
) -> PlanetScene:
    """Read SR + mask + metadata.json into a :class:`PlanetScene`; bad input raises SceneInputError.

    ``mask_path`` is a udm2 (8 bands) or legacy udm (1 band), told apart by band count; ``None``
    falls back to SR data presence (mask kind "none", with a warning). ``item_id`` defaults to the
    metadata id and must match it when given.
    """
    item_id, item_type, acquired = read_metadata(Path(metadata_path), item_id)
    files = PlanetAssets(item_id, item_type, Path(sr_path), None, None, Path(metadata_path))
    assets = classified_assets(files, mask_path)
    header = check_rasters(assets)  # band counts, dtypes, CRS, grids, truncation
    optical = read_optical(assets, params=params)
    kind = mask_kind(assets)
    if not optical.valid.any():
        raise SceneInputError(item_id, f"no valid pixel in {assets.sr.name} ({kind} mask: all cloud or nodata)")
    warning = NO_MASK_WARNING if kind == "none" else None
    if warning:
        logger.warning("scene %s: %s", item_id, warning)
    return PlanetScene(
        item_id=item_id,
        item_type=item_type,
        acquired=acquired,
        crs=header.crs.to_string(),
        transform=header.transform,
        width=header.shape[1],
        height=header.shape[0],
        reflectance=optical.reflectance,
        ndvi=optical.ndvi,
        valid=optical.valid,
        footprint=data_footprint(optical.data, header.transform),
        mask_kind=kind,
        valid_fraction=float(optical.valid.mean()),
        warning=warning,
    )


def classified_assets(assets: PlanetAssets, mask_path: Path | None) -> PlanetAssets:
    """``assets`` with ``mask_path`` filed as their udm2 or udm by its band count."""
    kind = _mask_kind(assets.item_id, mask_path)
    return replace(assets, udm2=mask_path if kind == "udm2" else None, udm=mask_path if kind == "udm" else None)


def mask_kind(assets: PlanetAssets) -> str:
    """ "udm2", "udm" or "none" for classified assets."""
    return "udm2" if assets.udm2 else "udm" if assets.udm else "none"


@dataclass(frozen=True)
class OpticalLayers:
    """Reflectance (4, h, w), NDVI and validity of a scene or of one window of it, as stacked."""

    reflectance: np.ndarray  # float32, blue, green, red, nir; 0 where invalid
    ndvi: np.ndarray  # float32 in [-1, 1]; 0 where invalid
    valid: np.ndarray  # bool
    data: np.ndarray  # bool: SR data present (the footprint), whatever the mask says

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape


def read_optical(
    assets: PlanetAssets, window: Window | None = None, params: PlanetParams = DEFAULT_PLANET_PARAMS
) -> OpticalLayers:
    """The optical layers of classified assets, of the whole raster or of ``window`` (unreadable data raises
    SceneInputError naming the file)."""
    kind = mask_kind(assets)
    mask_valid = _mask_valid(assets.item_id, assets.udm2 or assets.udm, kind, params, window)
    reflectance = _read(assets.item_id, assets.sr, np.float32, window)  # raw values, scaled in place below
    data = data_present(reflectance, params)
    valid = data & mask_valid
    reflectance /= np.float32(params.reflectance_scale)
    reflectance *= valid
    return OpticalLayers(reflectance, ndvi(reflectance[2], reflectance[3], valid), valid, data)


def read_metadata(path: Path, item_id: str | None = None) -> tuple[str, str, dt.datetime]:
    """(item id, item type, acquired UTC) from Planet's metadata.json; the id must match ``item_id``."""
    name = item_id or path.name
    try:
        metadata = json.loads(Path(path).read_text())
        properties: dict[str, Any] = metadata["properties"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SceneInputError(name, f"cannot read {path.name}: {error!r}") from error
    found_id = metadata.get("id")
    if not found_id or (item_id is not None and found_id != item_id):
        raise SceneInputError(name, f"{path.name} holds id {found_id!r}, expected {item_id!r}")
    item_type = ITEM_TYPES.get(properties.get("item_type"))
    if item_type is None:
        raise SceneInputError(found_id, f"{path.name}: unknown item type {properties.get('item_type')!r}")
    return found_id, item_type, _acquired(found_id, path, properties.get("acquired"))


def _acquired(item_id: str, path: Path, value: Any) -> dt.datetime:
    """The acquisition time in UTC (naive times are taken as UTC)."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError) as error:
        raise SceneInputError(item_id, f"{path.name} has no valid acquired time ({value!r})") from error
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _mask_kind(item_id: str, mask_path: Path | None) -> str:
    if mask_path is None:
        return "none"
    count = raster_header(item_id, Path(mask_path)).count
    if count not in MASK_KINDS:
        raise SceneInputError(item_id, f"{Path(mask_path).name} has {count} bands, expected 8 (udm2) or 1 (udm)")
    return MASK_KINDS[count]


def _mask_valid(
    item_id: str, mask_path: Path | None, mask_kind: str, params: PlanetParams, window: Window | None = None
) -> np.ndarray | bool:
    if mask_kind == "none" or mask_path is None:
        return True
    mask = _read(item_id, Path(mask_path), window=window)
    if mask.dtype != np.uint8:
        raise SceneInputError(item_id, f"{Path(mask_path).name} is {mask.dtype}, expected uint8")
    return udm2_valid(mask, params) if mask_kind == "udm2" else udm_valid(mask[0])


def _read(item_id: str, path: Path, dtype: type | None = None, window: Window | None = None) -> np.ndarray:
    """All bands of a raster or of ``window`` (as ``dtype``); a decoding error (e.g. a corrupt tile) raises
    SceneInputError."""
    try:
        with rasterio.open(path) as source:
            return source.read(out_dtype=dtype, window=window)
    except RasterioError as error:
        raise SceneInputError(item_id, f"cannot read {path.name}: {error}") from error


# --- derived layers --------------------------------------------------------------------------------


def data_present(raw: np.ndarray, params: PlanetParams) -> np.ndarray:
    """Pixels where every band holds data: no band at nodata and no visible band at the missing value."""
    present = np.all(raw != params.sr_nodata, axis=0)
    if params.sr_missing_visible_value is not None:
        present &= ~np.any(raw[:3] == params.sr_missing_visible_value, axis=0)
    return present


def ndvi(red: np.ndarray, nir: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(nir - red) / (nir + red) clipped to [-1, 1]; 0 where invalid or nir + red == 0."""
    total = nir + red
    index = np.zeros(red.shape, dtype=np.float32)
    np.divide(nir - red, total, out=index, where=valid & (total != 0))
    return np.clip(index, -1.0, 1.0, out=index)


def data_footprint(
    data: np.ndarray, transform: Affine, tolerance_px: float = 1.0
) -> shapely.Polygon | shapely.MultiPolygon:
    """The outline of ``data`` (True = SR present) in CRS units, simplified by ``tolerance_px`` pixels.

    Built from pixel edges, so it lies within the raster bounds (simplification keeps a vertex subset).
    """
    parts = [
        shapely.geometry.shape(geometry)
        for geometry, _ in rasterio.features.shapes(data.view(np.uint8), mask=data, transform=transform)
    ]
    outline = shapely.union_all(parts)
    pixel = max(abs(transform.a), abs(transform.e))
    return outline.simplify(tolerance_px * pixel, preserve_topology=True)
