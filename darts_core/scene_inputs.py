"""Verify a catalogued Planet scene before anything is computed from it.

A STAC item of the catalogue must carry the assets ``sr`` (surface reflectance), ``udm2`` (or the
legacy ``udm``) and ``metadata``; every raster must decode completely (a truncated download fails
here, naming the scene and the file, instead of deep inside inference).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import RasterioError

from darts_core.planet_catalogue import SceneInputError
from darts_core.scene_ids import InvalidSceneIdError, parse_scene_id

KNOWN_ITEM_TYPES = ("PSScene", "PSOrthoTile")
SR_BANDS = 4
UDM2_BANDS = 8
QUICKLOOK_SIZE = 256
QUICKLOOK_REFLECTANCE_MAX = 0.15  # reflectance shown as white in the quick-look


@dataclass(frozen=True)
class VerifiedScene:
    """What a verified scene looks like: enough to plan the per-scene chain."""

    item_id: str
    item_type: str
    year: int
    acquired: str
    crs: str
    width: int
    height: int
    resolution_m: float
    cloud_cover_percent: float | None
    mask_kind: str  # "udm2" or "udm"
    asset_hrefs: dict[str, str]


def verify_scene_item(item: dict[str, Any]) -> VerifiedScene:
    """Check a catalogue item and its files; raise :class:`SceneInputError` naming the scene on bad input."""
    item_id = str(item.get("id"))
    try:
        scene_id = parse_scene_id(item_id)
    except InvalidSceneIdError as error:
        raise SceneInputError(item_id, str(error)) from error
    properties = item.get("properties", {})
    item_type = properties.get("pl:item_type", scene_id.item_type)
    if item_type not in KNOWN_ITEM_TYPES:
        raise SceneInputError(
            item_id, f"unknown item type {item_type!r} (expected one of {KNOWN_ITEM_TYPES})"
        )
    hrefs = required_asset_hrefs(item_id, item.get("assets", {}))
    mask_kind = "udm2" if "udm2" in hrefs else "udm"
    sr_profile = verify_raster(item_id, hrefs["sr"], expected_bands=SR_BANDS, expected_dtype="uint16")
    mask_profile = verify_raster(
        item_id, hrefs[mask_kind], expected_bands=UDM2_BANDS if mask_kind == "udm2" else 1
    )
    if (sr_profile["transform"], sr_profile["width"], sr_profile["height"]) != (
        mask_profile["transform"],
        mask_profile["width"],
        mask_profile["height"],
    ):
        raise SceneInputError(item_id, f"{hrefs['sr']} and {hrefs[mask_kind]} are not on the same grid")
    return VerifiedScene(
        item_id=item_id,
        item_type=item_type,
        year=scene_id.year,
        acquired=properties.get("datetime", scene_id.acquired_date.isoformat()),
        crs=sr_profile["crs"].to_string(),
        width=sr_profile["width"],
        height=sr_profile["height"],
        resolution_m=float(sr_profile["transform"].a),
        cloud_cover_percent=properties.get("eo:cloud_cover"),
        mask_kind=mask_kind,
        asset_hrefs=hrefs,
    )


def required_asset_hrefs(item_id: str, assets: dict[str, Any]) -> dict[str, str]:
    """The hrefs of sr, metadata and udm2 (or legacy udm); raise naming the scene if one is missing."""
    missing = [key for key in ("sr", "metadata") if key not in assets]
    if "udm2" not in assets and "udm" not in assets:
        missing.append("udm2")
    if missing:
        raise SceneInputError(item_id, f"catalogue item has no {', '.join(missing)} asset")
    return {key: asset["href"] for key, asset in assets.items() if key in ("sr", "udm2", "udm", "metadata")}


def verify_raster(item_id: str, href: str, expected_bands: int, expected_dtype: str | None = None) -> dict:
    """Open ``href`` and decode every block (constant memory); return its profile."""
    try:
        with rasterio.open(href) as source:
            profile = dict(source.profile)
            if source.count != expected_bands:
                raise SceneInputError(item_id, f"{href} has {source.count} bands, expected {expected_bands}")
            if expected_dtype and source.dtypes[0] != expected_dtype:
                raise SceneInputError(item_id, f"{href} is {source.dtypes[0]}, expected {expected_dtype}")
            if source.crs is None:
                raise SceneInputError(item_id, f"{href} has no CRS")
            for _, window in source.block_windows(1):
                source.read(window=window)
    except RasterioError as error:
        raise SceneInputError(
            item_id, f"{href} is not a readable GeoTIFF (corrupt or truncated): {error}"
        ) from error
    return profile


def quicklook_png(sr_href: str, size: int = QUICKLOOK_SIZE) -> bytes:
    """A small true-colour PNG of a BGRN surface-reflectance GeoTIFF (nodata transparent)."""
    with rasterio.open(sr_href) as source:
        scale = size / max(source.width, source.height)
        shape = (max(1, round(source.height * scale)), max(1, round(source.width * scale)))
        blue, green, red = source.read([1, 2, 3], out_shape=(3, *shape)).astype(np.float32)
    rgb = np.stack([red, green, blue], axis=-1) / 10000.0
    rgb8 = (np.clip(rgb / QUICKLOOK_REFLECTANCE_MAX, 0, 1) * 255).astype(np.uint8)
    alpha = np.where((red > 0) | (green > 0) | (blue > 0), 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([rgb8, alpha]), mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
