"""Register PlanetScope downloads as STAC items in a stac-geoparquet catalogue.

A scene folder holds the files Planet delivers for one or more scenes (flat):

* PSScene      ``<id>_3B_AnalyticMS_SR(_clip).tif``, ``<id>_3B_udm2(_clip).tif`` and/or the legacy
  ``<id>_3B_AnalyticMS_DN_udm(_clip).tif``, ``<id>_metadata.json``
* PSOrthoTile  ``<id>_BGRN_SR.tif``, ``<id>_udm2.tif`` and/or the legacy ``<id>_BGRN_DN_udm.tif``,
  ``<id>_metadata.json``

Items are STAC 1.1 with the projection, eo, raster (and view) extensions. The catalogue is written with
rustac, which stores ``datetime``/``created``/``updated`` as millisecond timestamps: read items carry
the acquisition time truncated to milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rustac
import shapely
import shapely.geometry
from pystac import MediaType
from rasterio.crs import CRS
from rasterio.enums import Interleaving
from rasterio.errors import RasterioError
from shapely.errors import GEOSException

from darts_core.params import PlanetParams
from darts_core.scene_ids import InvalidSceneIdError, SceneId, parse_scene_id

COLLECTION = "planet"
STAC_VERSION = "1.1.0"
PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
VIEW_SCHEMA = "https://stac-extensions.github.io/view/v1.0.0/schema.json"

# Planet item type -> the item type used here (legacy PSScene4Band/PSScene3Band are PSScenes).
ITEM_TYPES = {
    "PSScene": "PSScene",
    "PSScene4Band": "PSScene",
    "PSScene3Band": "PSScene",
    "PSOrthoTile": "PSOrthoTile",
}
METADATA_SUFFIX = "_metadata.json"
# Candidate file-name suffixes per item type and asset, in order of preference.
ASSET_SUFFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "PSScene": {
        "sr": ("_3B_AnalyticMS_SR_clip.tif", "_3B_AnalyticMS_SR.tif"),
        "sr_8b": ("_3B_AnalyticMS_SR_8b_clip.tif", "_3B_AnalyticMS_SR_8b.tif"),
        "udm2": ("_3B_udm2_clip.tif", "_3B_udm2.tif"),
        "udm": ("_3B_AnalyticMS_DN_udm_clip.tif", "_3B_AnalyticMS_DN_udm.tif"),
    },
    "PSOrthoTile": {
        "sr": ("_BGRN_SR_clip.tif", "_BGRN_SR.tif"),
        "sr_8b": (),
        "udm2": ("_udm2_clip.tif", "_udm2.tif"),
        "udm": ("_BGRN_DN_udm_clip.tif", "_BGRN_DN_udm.tif"),
    },
}
# Longest first, so that "<id>_3B_udm2.tif" is never read as "<id>_3B" + "_udm2.tif".
KNOWN_SUFFIXES = sorted(
    {METADATA_SUFFIX, *(s for assets in ASSET_SUFFIXES.values() for group in assets.values() for s in group)},
    key=len,
    reverse=True,
)
SR_BANDS = ("blue", "green", "red", "nir")
UDM2_BANDS = ("clear", "snow", "shadow", "light_haze", "heavy_haze", "cloud", "confidence", "unusable")
SR_SCALE = 1 / PlanetParams().reflectance_scale
SR_NODATA = PlanetParams().sr_nodata


class SceneInputError(Exception):
    """Bad scene input; the message always names the item id (or the folder when no id is known)."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"scene {item}: {reason}")
        self.item = item
        self.reason = reason


@dataclass(frozen=True)
class PlanetAssets:
    """The local files of one Planet scene."""

    item_id: str
    item_type: str  # "PSScene" | "PSOrthoTile"
    sr: Path  # surface reflectance GeoTIFF
    udm2: Path | None  # 8-band usable data mask
    udm: Path | None  # legacy 1-band UDM
    metadata: Path  # <id>_metadata.json


@dataclass(frozen=True)
class RasterHeader:
    """What the item needs from a GeoTIFF header."""

    crs: CRS
    shape: tuple[int, int]
    transform: rasterio.Affine
    bounds: tuple[float, float, float, float]
    count: int
    dtypes: tuple[str, ...]


@dataclass
class RegistrationReport:
    registered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item id (or folder) -> reason


# --- finding the files -----------------------------------------------------------------------------


def scene_prefixes(folder: Path) -> list[str]:
    """The (not yet validated) item ids that the Planet file names in ``folder`` start with, sorted."""
    prefixes = set()
    for path in folder.iterdir():
        suffix = next((s for s in KNOWN_SUFFIXES if path.name.endswith(s)), None)
        if suffix and path.is_file():
            prefixes.add(path.name.removesuffix(suffix))
    return sorted(prefixes)


def find_planet_assets(folder: Path, item_id: str | None = None) -> PlanetAssets:
    """Locate one scene's files in ``folder``; ``item_id`` selects a scene when several lie there."""
    folder = Path(folder)
    if item_id is None:
        item_id = _single_scene(folder)
    _parse_id(item_id)  # before any path is built from it
    metadata_path = folder / f"{item_id}{METADATA_SUFFIX}"
    if not metadata_path.is_file():
        raise SceneInputError(item_id, f"metadata file {metadata_path.name} missing in {folder}")
    item_type = _item_type(item_id, _load_metadata(item_id, metadata_path))
    suffixes = ASSET_SUFFIXES[item_type]
    sr = _first_existing(folder, item_id, suffixes["sr"])
    if sr is None:
        if _first_existing(folder, item_id, suffixes["sr_8b"]):
            raise SceneInputError(item_id, "8-band SR not supported (expected 4-band BGRN SR)")
        expected = " or ".join(f"{item_id}{suffix}" for suffix in suffixes["sr"])
        raise SceneInputError(item_id, f"SR GeoTIFF missing in {folder} (expected {expected})")
    udm2 = _first_existing(folder, item_id, suffixes["udm2"])
    udm = _first_existing(folder, item_id, suffixes["udm"])
    if udm2 is None and udm is None:
        raise SceneInputError(item_id, f"no usable data mask (udm2 or legacy udm) in {folder}")
    return PlanetAssets(item_id, item_type, sr, udm2, udm, metadata_path)


def _single_scene(folder: Path) -> str:
    if not folder.is_dir():
        raise SceneInputError(str(folder), "not a folder")
    prefixes = scene_prefixes(folder)
    if len(prefixes) != 1:
        found = ", ".join(prefixes) or "none"
        raise SceneInputError(str(folder), f"expected the files of exactly one scene, found: {found}")
    return prefixes[0]


def _first_existing(folder: Path, item_id: str, suffixes: Iterable[str]) -> Path | None:
    for suffix in suffixes:
        if (path := folder / f"{item_id}{suffix}").is_file():
            return path
    return None


def _parse_id(item_id: str) -> SceneId:
    try:
        return parse_scene_id(item_id)
    except InvalidSceneIdError as error:
        raise SceneInputError(str(item_id), str(error)) from error


def _load_metadata(item_id: str, path: Path) -> dict[str, Any]:
    """Planet's metadata.json as a GeoJSON feature whose id must be ``item_id``."""
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SceneInputError(item_id, f"cannot read {path.name}: {error}") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("properties"), dict):
        raise SceneInputError(item_id, f"{path.name} is not a GeoJSON feature with properties")
    if metadata.get("id") != item_id:
        raise SceneInputError(item_id, f"{path.name} holds id {metadata.get('id')!r}, not {item_id!r}")
    return metadata


def _item_type(item_id: str, metadata: dict[str, Any]) -> str:
    """The normalised item type; it must match the id layout."""
    planet_type = metadata["properties"].get("item_type")
    if planet_type not in ITEM_TYPES:
        raise SceneInputError(item_id, f"unknown item type {planet_type!r}")
    item_type = ITEM_TYPES[planet_type]
    if item_type != _parse_id(item_id).item_type:
        raise SceneInputError(item_id, f"item type {planet_type} does not match the id layout")
    return item_type


# --- reading the rasters ---------------------------------------------------------------------------


def raster_header(item_id: str, path: Path) -> RasterHeader:
    """Read a GeoTIFF header; an unreadable or truncated file raises :class:`SceneInputError`."""
    try:
        with rasterio.open(path) as src:
            _check_blocks_in_file(src, path)
            return RasterHeader(src.crs, src.shape, src.transform, tuple(src.bounds), src.count, src.dtypes)
    except (RasterioError, ValueError) as error:
        raise SceneInputError(item_id, f"cannot read {path.name}: {error}") from error


def _check_blocks_in_file(src: rasterio.DatasetReader, path: Path) -> None:
    """Raise when a tile or strip lies beyond the end of the file (a truncated download)."""
    size = path.stat().st_size
    bands = src.indexes if src.interleaving == Interleaving.band else src.indexes[:1]
    for band in bands:
        for (row, col), _ in src.block_windows(band):
            offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
            length = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
            end = int(offset or 0) + int(length or 0)
            if offset and end > size:
                raise ValueError(f"file truncated ({size} bytes, a data block ends at byte {end})")


def check_rasters(assets: PlanetAssets) -> RasterHeader:
    """Check band counts and that every mask shares the SR grid; return the SR header."""
    sr = raster_header(assets.item_id, assets.sr)
    if sr.crs is None:
        raise SceneInputError(assets.item_id, f"{assets.sr.name} has no CRS")
    if sr.count != 4 or set(sr.dtypes) != {"uint16"}:
        found = f"{sr.count} bands of {'/'.join(sorted(set(sr.dtypes)))}"
        raise SceneInputError(assets.item_id, f"{assets.sr.name} has {found}, expected 4 uint16")
    for path, bands in ((assets.udm2, 8), (assets.udm, 1)):
        if path is None:
            continue
        mask = raster_header(assets.item_id, path)
        if mask.count != bands:
            raise SceneInputError(assets.item_id, f"{path.name} has {mask.count} bands, expected {bands}")
        if (mask.crs, mask.shape) != (sr.crs, sr.shape) or not mask.transform.almost_equals(sr.transform):
            raise SceneInputError(assets.item_id, f"{path.name} is not on the grid of {assets.sr.name}")
    return sr


# --- the STAC item ---------------------------------------------------------------------------------


def scene_item(assets: PlanetAssets, href_root: str | None = None) -> dict[str, Any]:
    """The STAC 1.1 item of one scene, as a dict.

    Hrefs are absolute local paths, or ``href_root/<scene folder name>/<file name>`` when ``href_root``
    is given (``href_root`` then stands for the parent of the scene folders, e.g. a ``gs://`` prefix).
    """
    metadata = _load_metadata(assets.item_id, assets.metadata)
    scene = _parse_id(assets.item_id)
    sr = check_rasters(assets)
    geometry = metadata.get("geometry")
    try:
        footprint = shapely.geometry.shape(geometry)
    except (AttributeError, TypeError, ValueError, GEOSException) as error:
        raise SceneInputError(assets.item_id, f"{assets.metadata.name} has no valid footprint") from error
    if footprint.is_empty or footprint.geom_type not in ("Polygon", "MultiPolygon"):
        raise SceneInputError(assets.item_id, f"{assets.metadata.name} footprint is not a polygon")
    properties = _properties(assets, metadata["properties"], scene, sr)
    extensions = [PROJECTION_SCHEMA, EO_SCHEMA, RASTER_SCHEMA]
    if any(key.startswith("view:") for key in properties):
        extensions.append(VIEW_SCHEMA)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": assets.item_id,
        "collection": COLLECTION,
        "geometry": geometry,
        "bbox": footprint_bbox(footprint),
        "properties": properties,
        "links": [],
        "assets": _assets(assets, href_root),
    }


def footprint_bbox(footprint: shapely.Geometry) -> list[float]:
    """GeoJSON bbox; across the antimeridian (a split footprint) west > east, as RFC 7946 asks."""
    west, south, east, north = footprint.bounds
    if east - west > 180:  # parts on both sides of +-180: measure in 0..360 longitudes
        shifted = shapely.transform(footprint, lambda xy: xy + np.array([360.0, 0.0]) * (xy[:, [0]] < 0))
        west, _, east, _ = shifted.bounds
        west, east = (west - 360 if west > 180 else west), (east - 360 if east > 180 else east)
    return [west, south, east, north]


def cloud_cover_percent(cloud_cover: float) -> float:
    """Planet's ``cloud_cover`` as percent: values <= 1 are fractions (current metadata), larger ones
    are taken as percent already (so 1 means 100 %, never 1 %)."""
    value = float(cloud_cover)
    percent = round(value * 100 if value <= 1 else value, 6)
    if not 0 <= percent <= 100:
        raise ValueError(f"cloud_cover {cloud_cover!r} is outside 0-1 (fraction) and 0-100 (percent)")
    return percent


def _properties(
    assets: PlanetAssets, planet: dict[str, Any], scene: SceneId, sr: RasterHeader
) -> dict[str, Any]:
    if not planet.get("acquired"):
        raise SceneInputError(assets.item_id, f"{assets.metadata.name} has no acquired time")
    cloud_cover = planet.get("cloud_cover")
    try:
        properties = {
            "datetime": _utc(planet["acquired"]),
            "created": _utc(planet.get("published")),
            "updated": _utc(planet.get("updated")),
            "constellation": "planetscope",
            "platform": planet.get("satellite_id", scene.satellite_id),
            "instruments": [planet["instrument"]] if planet.get("instrument") else None,
            "gsd": _float(planet.get("gsd")),
            "eo:cloud_cover": None if cloud_cover is None else cloud_cover_percent(cloud_cover),
            "view:off_nadir": _float(planet.get("view_angle")),
            "view:sun_azimuth": _float(planet.get("sun_azimuth")),
            "view:sun_elevation": _float(planet.get("sun_elevation")),
            "pl:item_type": assets.item_type,
            "pl:strip_id": None if planet.get("strip_id") is None else str(planet["strip_id"]),
            "pl:quality_category": planet.get("quality_category"),
            "pl:ground_control": planet.get("ground_control"),
            **_projection(sr),
            "darts:year": scene.year,
        }
    except (KeyError, TypeError, ValueError) as error:
        raise SceneInputError(assets.item_id, f"bad {assets.metadata.name}: {error!r}") from error
    return {key: value for key, value in properties.items() if value is not None}


def _projection(sr: RasterHeader) -> dict[str, Any]:
    epsg = sr.crs.to_epsg()
    return {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:wkt2": None if epsg else sr.crs.to_wkt(),
        "proj:shape": list(sr.shape),
        "proj:transform": list(sr.transform)[:6],
        "proj:bbox": list(sr.bounds),
    }


def _utc(value: str | None) -> str | None:
    """An RFC 3339 timestamp normalised to UTC with a ``Z`` (naive times are taken as UTC)."""
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value)
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _assets(assets: PlanetAssets, href_root: str | None) -> dict[str, dict[str, Any]]:
    def geotiff(path: Path, roles: list[str], bands: list[dict[str, Any]]) -> dict[str, Any]:
        return {"href": _href(path, href_root), "type": MediaType.GEOTIFF, "roles": roles, "bands": bands}

    sr_bands = [
        {"name": name, "eo:common_name": name, "nodata": SR_NODATA, "data_type": "uint16", "raster:scale": SR_SCALE}
        for name in SR_BANDS
    ]
    items = {"sr": geotiff(assets.sr, ["data", "reflectance"], sr_bands)}
    if assets.udm2:
        udm2_bands = [{"name": name, "data_type": "uint8"} for name in UDM2_BANDS]
        items["udm2"] = geotiff(assets.udm2, ["data-mask"], udm2_bands)
    if assets.udm:
        items["udm"] = geotiff(assets.udm, ["data-mask"], [{"name": "udm", "data_type": "uint8"}])
    metadata_href = _href(assets.metadata, href_root)
    items["metadata"] = {"href": metadata_href, "type": MediaType.JSON, "roles": ["metadata"]}
    return items


def _href(path: Path, href_root: str | None) -> str:
    absolute = Path(os.path.abspath(path))
    if href_root is None:
        return str(absolute)
    return f"{href_root.rstrip('/')}/{absolute.parent.name}/{absolute.name}"


# --- the stac-geoparquet catalogue -----------------------------------------------------------------


def read_catalogue(catalogue: Path) -> list[dict[str, Any]]:
    """The items of a stac-geoparquet file in file order; an absent file holds no items."""
    if not Path(catalogue).exists():
        return []
    items = rustac.read_sync(str(catalogue), set_self_link=False)["features"]
    for item in items:  # rustac returns the bbox as a tuple
        if "bbox" in item:
            item["bbox"] = list(item["bbox"])
    return items


def register_scene_folders(
    folders: Iterable[Path], catalogue: Path, href_root: str | None = None
) -> RegistrationReport:
    """Build items for every scene in ``folders`` and merge them into ``catalogue``.

    Items with a known id are replaced in place, new ones are appended (the order is append-only);
    when nothing changes the file is left untouched. Bad scenes are reported, not raised.
    """
    report = RegistrationReport()
    items: dict[str, dict[str, Any]] = {}
    for folder in map(Path, folders):
        for item in _folder_items(folder, href_root, report.failed):
            items[item["id"]] = item
    if items:
        _merge_into_catalogue(Path(catalogue), list(items.values()))
    report.registered = list(items)
    return report


def _folder_items(folder: Path, href_root: str | None, failed: dict[str, str]) -> list[dict[str, Any]]:
    if not folder.is_dir():
        failed[str(folder)] = str(SceneInputError(str(folder), "not a folder"))
        return []
    prefixes = scene_prefixes(folder)
    if not prefixes:
        failed[str(folder)] = str(SceneInputError(str(folder), "no PlanetScope scene files found"))
    items = []
    for prefix in prefixes:
        try:
            items.append(scene_item(find_planet_assets(folder, prefix), href_root))
        except SceneInputError as error:
            failed[error.item] = str(error)
    return items


def _merge_into_catalogue(catalogue: Path, items: list[dict[str, Any]]) -> None:
    existing = read_catalogue(catalogue)
    merged = {item["id"]: item for item in existing}
    merged.update((item["id"], item) for item in items)  # replaced ids keep their place, new ones go last
    folder = catalogue.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{catalogue.name}.", suffix=".parquet")
    os.close(handle)
    temp = Path(temp_name)
    try:
        rustac.write_sync(str(temp), list(merged.values()))
        if read_catalogue(temp) != existing:  # compare as stored: rustac normalises timestamps
            os.replace(temp, catalogue)
    finally:
        temp.unlink(missing_ok=True)
