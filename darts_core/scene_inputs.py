"""Verify a catalogued Planet scene before anything is computed from it.

A STAC item of the catalogue must carry the assets ``sr`` (surface reflectance), ``udm2`` (or the
legacy ``udm``) and ``metadata``; every raster must be a readable GeoTIFF on the SR grid (a truncated
download fails here, naming the scene and the file, instead of deep inside inference).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image

from darts_core.planet_catalogue import ITEM_TYPES, PlanetAssets, SceneInputError, check_rasters
from darts_core.scene_ids import InvalidSceneIdError, parse_scene_id

KNOWN_ITEM_TYPES = tuple(sorted(set(ITEM_TYPES.values())))
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
    assets: PlanetAssets


def verify_scene_item(item: dict[str, Any]) -> VerifiedScene:
    """Check a catalogue item and its files; raise :class:`SceneInputError` naming the scene on bad input.

    Checks the id, the item type, the required assets, every raster's header, band count, grid and that
    no data block lies beyond the end of its file (a truncated download), without decoding pixels.
    """
    item_id = str(item.get("id"))
    try:
        scene_id = parse_scene_id(item_id)
    except InvalidSceneIdError as error:
        raise SceneInputError(item_id, str(error)) from error
    properties = item.get("properties", {})
    item_type = properties.get("pl:item_type", scene_id.item_type)
    if item_type not in KNOWN_ITEM_TYPES:
        raise SceneInputError(item_id, f"unknown item type {item_type!r}, expected one of {KNOWN_ITEM_TYPES}")
    hrefs = required_asset_hrefs(item_id, item.get("assets", {}))
    assets = PlanetAssets(
        item_id=item_id,
        item_type=item_type,
        sr=Path(hrefs["sr"]),
        udm2=Path(hrefs["udm2"]) if "udm2" in hrefs else None,
        udm=Path(hrefs["udm"]) if "udm" in hrefs else None,
        metadata=Path(hrefs["metadata"]),
    )
    sr = check_rasters(assets)
    return VerifiedScene(
        item_id=item_id,
        item_type=item_type,
        year=scene_id.year,
        acquired=properties.get("datetime", scene_id.acquired_date.isoformat()),
        crs=sr.crs.to_string(),
        width=sr.shape[1],
        height=sr.shape[0],
        resolution_m=float(sr.transform.a),
        cloud_cover_percent=properties.get("eo:cloud_cover"),
        mask_kind="udm2" if assets.udm2 else "udm",
        asset_hrefs=hrefs,
        assets=assets,
    )


def required_asset_hrefs(item_id: str, assets: dict[str, Any]) -> dict[str, str]:
    """The hrefs of sr, metadata and udm2 (or legacy udm); raise naming the scene if one is missing."""
    missing = [key for key in ("sr", "metadata") if key not in assets]
    if "udm2" not in assets and "udm" not in assets:
        missing.append("udm2")
    if missing:
        raise SceneInputError(item_id, f"catalogue item has no {', '.join(missing)} asset")
    return {key: asset["href"] for key, asset in assets.items() if key in ("sr", "udm2", "udm", "metadata")}


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
