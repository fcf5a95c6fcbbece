"""A synthetic PlanetScope scene of any size with its auxiliary mosaics, in the real file formats (for benchmarks).

``synthesise_scene(root, width, height)`` writes under ``root``:

* ``planet/``: one PSScene item ``<id>_3B_AnalyticMS_SR_clip.tif`` (uint16 BGRN x 10000, nodata 0, LZW, 256 px
  tiles, pixel-interleaved as Planet delivers it), ``<id>_3B_udm2_clip.tif`` (8 bands) and ``<id>_metadata.json``;
  3 m pixels in UTM 8N; the valid data is a rotated frame (nodata corners), with a cloud patch flagged in the udm2;
* ``aux/``: an ArcticDEM-like 10 m DEM (EPSG:3413) as 2 x 2 tiles and a VRT mosaic, TCVIS (3 x uint8, 30 m,
  EPSG:3413) and WorldCover-like land cover (EPSG:4326, 1/12000 deg, water class 80), all reaching 1 km beyond the
  scene.

Fields are smooth noise (lakes, vegetation, relief): the content only has to look like a landscape to the
compressors and the cleaning step; the speed of the chain does not depend on it otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds
from scipy import ndimage

from darts_core.aux_layers import aligned_grid, mosaic_vrt_xml

ITEM_ID = "20230815_191951_90_24af"
SCENE_CRS, DEM_CRS, LANDCOVER_CRS = "EPSG:32608", "EPSG:3413", "EPSG:4326"
CENTRE_LONLAT = (-135.3, 67.3)  # Peel Plateau, as the demo region
PIXEL_M, DEM_PIXEL_M, TCVIS_PIXEL_M, LANDCOVER_DEG = 3.0, 10.0, 30.0, 1 / 12000
AUX_MARGIN_M = 1000.0
FRAME_ROTATION_DEG = 8.0
WATER_CLASS, GRASS_CLASS, SHRUB_CLASS = 80, 30, 20
# reflectance x 10000 per band (blue, green, red, nir): (bare ground, full vegetation, lake)
SURFACES = ((900, 400, 400), (1100, 600, 380), (1300, 350, 220), (2200, 3600, 120))
COARSE = 8  # noise is drawn on a grid this many times coarser, then interpolated


@dataclass(frozen=True)
class SyntheticScene:
    """Paths of one synthesised scene and its auxiliary layers."""

    item_id: str
    folder: Path
    dem: Path
    tcvis: Path
    landcover: Path
    width: int
    height: int


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-smoothed noise (float32, zero mean, unit standard deviation) with features of ~``scale_px``."""
    coarse_shape = tuple(math.ceil(size / COARSE) + 1 for size in shape)
    small = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), max(scale_px / COARSE, 0.5))
    small = ((small - small.mean()) / small.std()).astype(np.float32)
    return ndimage.zoom(small, COARSE, order=1)[: shape[0], : shape[1]]


def scene_transform(width: int, height: int) -> Affine:
    """3 m north-up grid centred on ``CENTRE_LONLAT`` in UTM 8N."""
    x, y = Transformer.from_crs("EPSG:4326", SCENE_CRS, always_xy=True).transform(*CENTRE_LONLAT)
    left = math.floor((x - width * PIXEL_M / 2) / PIXEL_M) * PIXEL_M
    top = math.floor((y + height * PIXEL_M / 2) / PIXEL_M) * PIXEL_M
    return Affine(PIXEL_M, 0.0, left, 0.0, -PIXEL_M, top)


def scene_bounds(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the scene grid."""
    return rasterio.transform.array_bounds(height, width, scene_transform(width, height))


def frame_mask(width: int, height: int) -> np.ndarray:
    """The valid-data frame: the scene rectangle rotated by ``FRAME_ROTATION_DEG`` and shrunk to fit (bool)."""
    angle = math.radians(FRAME_ROTATION_DEG)
    cos, sin = math.cos(angle), math.sin(angle)
    shrink = 1 / (cos + sin * max(width / height, height / width))
    cols = (np.arange(width, dtype=np.float32) - width / 2)[np.newaxis, :]
    rows = (np.arange(height, dtype=np.float32) - height / 2)[:, np.newaxis]
    along = np.abs(cos * cols + sin * rows) <= width / 2 * shrink
    return along & (np.abs(-sin * cols + cos * rows) <= height / 2 * shrink)


def reflectance(rng: np.random.Generator, shape: tuple[int, int], valid: np.ndarray) -> np.ndarray:
    """uint16 (4, H, W) BGRN x 10000: vegetation and lakes from smooth noise, 2 % pixel noise, 0 outside."""
    vegetation = np.clip(0.5 + 0.25 * smooth_field(rng, shape, 300), 0, 1)
    lakes = smooth_field(rng, shape, 600) > 1.4
    bands = np.empty((4, *shape), dtype=np.uint16)
    for index, (bare, green, water) in enumerate(SURFACES):
        band = bare + (green - bare) * vegetation
        band[lakes] = water
        band *= rng.normal(1.0, 0.02, shape).astype(np.float32)
        bands[index] = np.where(valid, np.clip(band, 2, 10000), 0)
    return bands


def udm2(rng: np.random.Generator, valid: np.ndarray) -> np.ndarray:
    """uint8 (8, H, W): clear inside the frame except a cloud patch; band 8 (unusable) outside the frame."""
    cloud = (smooth_field(rng, valid.shape, 250) > 2.0) & valid
    bands = np.zeros((8, *valid.shape), dtype=np.uint8)
    bands[0] = valid & ~cloud
    bands[5] = cloud
    bands[6] = np.where(valid, 90, 0)
    bands[7] = ~valid
    return bands


def write_raster(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata: float | None, **options) -> None:
    """A tiled, LZW-compressed GeoTIFF (Planet's and the mosaics' layout)."""
    data = data if data.ndim == 3 else data[np.newaxis]
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2]}
    profile |= {"dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, "tiled": True}
    profile |= {"blockxsize": 256, "blockysize": 256, "compress": "lzw", **options}
    with rasterio.open(path, "w", **profile) as sink:
        sink.write(data)


def write_planet_item(folder: Path, width: int, height: int, rng: np.random.Generator) -> None:
    """SR, udm2 and metadata.json of one PSScene, named as Planet delivers them."""
    folder.mkdir(parents=True, exist_ok=True)
    transform, valid = scene_transform(width, height), frame_mask(width, height)
    sr = reflectance(rng, valid.shape, valid)
    write_raster(folder / f"{ITEM_ID}_3B_AnalyticMS_SR_clip.tif", sr, SCENE_CRS, transform, 0, interleave="pixel")
    del sr
    mask = udm2(rng, valid)
    write_raster(folder / f"{ITEM_ID}_3B_udm2_clip.tif", mask, SCENE_CRS, transform, None, interleave="band")
    west, south, east, north = transform_bounds(SCENE_CRS, "EPSG:4326", *scene_bounds(width, height))
    outline = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    properties = {
        "acquired": dt.datetime(2023, 8, 15, 19, 19, 51, 900000, tzinfo=dt.UTC).isoformat().replace("+00:00", "Z"),
        "item_type": "PSScene",
        "instrument": "PSB.SD",
        "pixel_resolution": PIXEL_M,
        "cloud_cover": round(float(mask[5].mean()), 2),
        "columns": width,
        "rows": height,
        "epsg_code": int(SCENE_CRS.split(":")[1]),
    }
    metadata = {"id": ITEM_ID, "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [outline]}}
    (folder / f"{ITEM_ID}_metadata.json").write_text(json.dumps(metadata | {"properties": properties}))


def aux_grid(bounds: tuple[float, float, float, float], crs: str, resolution: float):
    """A grid of ``resolution`` in ``crs`` covering the scene bounds plus ``AUX_MARGIN_M``."""
    left, bottom, right, top = transform_bounds(SCENE_CRS, crs, *bounds, densify_pts=21)
    margin = AUX_MARGIN_M if crs != LANDCOVER_CRS else AUX_MARGIN_M / 111_000 / math.cos(math.radians(70))
    return aligned_grid((left - margin, bottom - margin, right + margin, top + margin), crs, resolution)


def write_dem_mosaic(aux: Path, bounds, rng: np.random.Generator) -> Path:
    """2 x 2 DEM tiles (float32, nodata -9999) and the VRT mosaic over them."""
    grid = aux_grid(bounds, DEM_CRS, DEM_PIXEL_M)
    elevation = 300 + 25 * smooth_field(rng, grid.shape, 150) + 4 * smooth_field(rng, grid.shape, 12)
    paths = []
    for row_half in range(2):
        for col_half in range(2):
            rows = slice(row_half * grid.height // 2, (row_half + 1) * grid.height // 2 if row_half == 0 else None)
            cols = slice(col_half * grid.width // 2, (col_half + 1) * grid.width // 2 if col_half == 0 else None)
            tile = elevation[rows, cols]
            transform = grid.transform * Affine.translation(cols.start, rows.start)
            path = aux / "dem" / f"{row_half}_{col_half}_10m_v4.1_dem.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_raster(path, tile.astype(np.float32), DEM_CRS, transform, -9999.0, predictor=3)
            paths.append(str(path))
    vrt = aux / "arcticdem_mosaic.vrt"
    vrt.write_text(mosaic_vrt_xml(paths))
    return vrt


def write_tcvis(aux: Path, bounds, rng: np.random.Generator) -> Path:
    grid = aux_grid(bounds, DEM_CRS, TCVIS_PIXEL_M)
    bands = np.stack([np.clip(128 + 40 * smooth_field(rng, grid.shape, 20), 0, 255) for _ in range(3)])
    path = aux / "tcvis.tif"
    write_raster(path, bands.astype(np.uint8), DEM_CRS, grid.transform, None)
    return path


def write_landcover(aux: Path, bounds, rng: np.random.Generator) -> Path:
    grid = aux_grid(bounds, LANDCOVER_CRS, LANDCOVER_DEG)
    classes = np.where(smooth_field(rng, grid.shape, 100) > 0, SHRUB_CLASS, GRASS_CLASS).astype(np.uint8)
    classes[smooth_field(rng, grid.shape, 200) > 1.4] = WATER_CLASS
    path = aux / "landcover.tif"
    write_raster(path, classes, LANDCOVER_CRS, grid.transform, 0)
    return path


def synthesise_scene(root: Path, width: int, height: int, seed: int = 0) -> SyntheticScene:
    """Write the scene and its auxiliary layers under ``root`` (deterministic from ``seed``)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    folder, aux = root / "planet", root / "aux"
    aux.mkdir(parents=True, exist_ok=True)
    write_planet_item(folder, width, height, rng)
    bounds = scene_bounds(width, height)
    dem, tcvis, landcover = (write(aux, bounds, rng) for write in (write_dem_mosaic, write_tcvis, write_landcover))
    return SyntheticScene(ITEM_ID, folder, dem, tcvis, landcover, width, height)
