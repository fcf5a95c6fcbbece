"""Demo region, part 2: PlanetScope PSScene / PSOrthoTile items rendered from the synthetic landscape.

Each year's landscape is composed once on a 3 m master grid (surface reflectance per land-surface type,
vegetation from the NDVI field, texture, a slight blur for the sensor PSF); each scene then samples it
on its own grid and adds its own illumination (terrain shading for its sun angles), gain, noise and, for
one scene, clouds, haze and cloud shadows, which its udm2 flags.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from darts_core._demo_io import write_tif
from darts_core._demo_terrain import YEARS, Grid, Layout, Terrain, rng_for, smooth_noise
from darts_core.atomic import atomic_path

MASTER_RES = 3.0
ORTHO_RES, ORTHO_TILE_M = 3.125, 2400.0
SR_BANDS = ("blue", "green", "red", "nir")
UDM2_BANDS = ("clear", "snow", "shadow", "light_haze", "heavy_haze", "cloud", "confidence", "unusable")
# surface reflectance (blue, green, red, nir) of the non-vegetated surfaces, by master-map code
SURFACES = {
    1: (0.040, 0.038, 0.022, 0.012),  # clear lake
    2: (0.050, 0.058, 0.048, 0.028),  # river
    3: (0.070, 0.098, 0.110, 0.088),  # sediment-laden pond
    4: (0.115, 0.135, 0.155, 0.195),  # rock outcrop
    5: (0.160, 0.185, 0.205, 0.240),  # gravel road
    6: (0.085, 0.115, 0.145, 0.190),  # slump scar (wet mud)
    7: (0.050, 0.068, 0.085, 0.112),  # headwall scarp (shaded)
    8: (0.070, 0.092, 0.112, 0.140),  # mud-flow lobe
}
ALD_BARE = np.array((0.080, 0.108, 0.132, 0.180), np.float32)


@dataclass(frozen=True)
class ScenePlan:
    """One Planet item of the demo: id parts, footprint placement (fractions of the region) and role."""

    acquired: dt.datetime
    satellite_id: str
    center: tuple[float, float]
    rotation_deg: float
    labelled: bool = False
    cloudy: bool = False
    ortho_strip: str | None = None  # PSOrthoTile strip id; None for PSScene
    instrument: str = "PSB.SD"

    @property
    def item_type(self) -> str:
        return "PSScene" if self.ortho_strip is None else "PSOrthoTile"

    @property
    def item_id(self) -> str:
        if self.ortho_strip is not None:
            return f"{self.ortho_strip}_{GRID_CELL}_{self.acquired:%Y-%m-%d}_{self.satellite_id}"
        centis = "" if self.instrument == "PS2" else f"_{self.acquired.microsecond // 10000:02d}"
        return f"{self.acquired:%Y%m%d_%H%M%S}{centis}_{self.satellite_id}"


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


GRID_CELL = "0870514"
SCENE_PLAN = (
    ScenePlan(_utc(2018, 7, 16, 19, 24, 33, 0), "1035", (0.30, 0.52), 9, labelled=True, instrument="PS2"),
    ScenePlan(_utc(2018, 7, 24, 19, 12, 15, 0), "0f3c", (0.70, 0.49), 11, labelled=True, instrument="PS2"),
    ScenePlan(_utc(2021, 7, 15, 19, 32, 14, 470000), "2413", (0.28, 0.50), 8, labelled=True),
    ScenePlan(_utc(2021, 8, 3, 19, 28, 5, 180000), "2262", (0.72, 0.52), 10),
    ScenePlan(_utc(2021, 7, 21, 19, 40, 2, 0), "2407", (0.45, 0.50), 10, labelled=True, ortho_strip="4577307"),
    ScenePlan(_utc(2022, 7, 12, 19, 45, 11, 30000), "2447", (0.30, 0.49), 9, cloudy=True),
    ScenePlan(_utc(2022, 7, 29, 19, 45, 13, 210000), "241c", (0.69, 0.53), 10, labelled=True),
    ScenePlan(_utc(2022, 8, 26, 19, 10, 38, 660000), "24a3", (0.50, 0.47), 12),
    ScenePlan(_utc(2023, 7, 18, 19, 35, 2, 880000), "24b5", (0.33, 0.51), 9),
    ScenePlan(_utc(2023, 7, 30, 19, 21, 44, 0), "24c9", (0.62, 0.50), 12, ortho_strip="5633089"),
)
PSSCENE_FOOTPRINT_M = (2350.0, 2100.0)
ORTHO_STRIP_WIDTH_M = 1900.0


@dataclass(frozen=True)
class SceneGeometry:
    plan: ScenePlan
    grid: Grid
    footprint: BaseGeometry  # valid-data area (UTM)


def scene_geometry(plan: ScenePlan, region: Polygon) -> SceneGeometry:
    """PSScene: the rotated frame clipped to the region, on the 3 m grid; PSOrthoTile: a fixed 3.125 m
    tile centred in the region whose valid part is the rotated strip crossing it."""
    x0, y0, x1, y1 = region.bounds
    cx, cy = x0 + plan.center[0] * (x1 - x0), y0 + plan.center[1] * (y1 - y0)
    if plan.ortho_strip is None:
        w, h = PSSCENE_FOOTPRINT_M
        frame = affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), plan.rotation_deg)
        left, bottom, right, top = frame.intersection(region).bounds
        grid = Grid.covering(left, bottom, right, top, MASTER_RES)
        return SceneGeometry(plan, grid, frame.intersection(box(*grid.bounds)).intersection(region))
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    left = math.floor((mx - ORTHO_TILE_M / 2) / 25) * 25
    top = math.floor((my + ORTHO_TILE_M / 2) / 25) * 25
    n = int(ORTHO_TILE_M / ORTHO_RES)
    grid = Grid(left, top, ORTHO_RES, n, n)
    strip = affinity.rotate(box(cx - ORTHO_STRIP_WIDTH_M / 2, my - 4000, cx + ORTHO_STRIP_WIDTH_M / 2, my + 4000),
                            plan.rotation_deg)
    return SceneGeometry(plan, grid, strip.intersection(box(*grid.bounds)))


# ------------------------------------------------------------------------------------ landscape per year


@dataclass(frozen=True)
class MasterGrid:
    """Year-independent fields on the 3 m master grid (the region)."""

    grid: Grid
    ndvi: np.ndarray
    slope: np.ndarray  # radians
    aspect: np.ndarray  # radians, azimuth of the downslope direction
    texture: np.ndarray


def master_fields(seed: int, terrain: Terrain, region: Polygon) -> MasterGrid:
    grid = Grid.covering(*region.bounds, MASTER_RES)
    xx, yy = grid.centers()
    ndvi = terrain.grid.sample(terrain.ndvi, xx, yy)
    dem = terrain.grid.sample(terrain.dem, xx, yy)
    dz_row, dz_x = np.gradient(dem, MASTER_RES)
    dz_y = -dz_row
    slope = np.arctan(np.hypot(dz_x, dz_y))
    aspect = np.arctan2(-dz_x, -dz_y)
    texture = smooth_noise(rng_for(seed, "texture"), ndvi.shape, 1.0)
    return MasterGrid(grid, ndvi.astype(np.float32), slope.astype(np.float32), aspect.astype(np.float32), texture)


def year_reflectance(master: MasterGrid, layout: Layout, slumps, alds, year: int) -> np.ndarray:
    """Surface reflectance (4, rows, cols) of the landscape in ``year``, before any scene effects."""
    g = master.grid
    n = master.ndvi
    nir = 0.22 + 0.43 * (n - 0.5)
    red = nir * (1 - n) / (1 + n)
    refl = np.stack([0.55 * red + 0.012, 0.9 * red + 0.02, red, nir]).astype(np.float32)
    shapes = [(layout.river, 2), *[(p, 1) for p in layout.lakes], *[(p, 3) for p in layout.ponds],
              *[(p, 4) for p in layout.outcrops], (layout.road, 5)]
    for slump in slumps:
        if slump.footprint(year) is not None:
            shapes += [(slump.scar_in(year), 6), (slump.lobe, 8), (slump.headwall(year), 7)]
    codes = g.rasterize(shapes)
    bare = g.rasterize([(a.strip, a.bare_fraction(year)) for a in alds if a.bare_fraction(year) > 0], "float32")
    refl = refl * (1 - bare) + ALD_BARE[:, None, None] * bare
    for code, spectrum in SURFACES.items():
        inside = codes == code
        refl[:, inside] = np.asarray(spectrum, np.float32)[:, None]
    roughness = np.where((codes >= 4) | (bare > 0), 0.08, 0.04) * master.texture
    refl *= 1 + roughness
    return ndimage.gaussian_filter(refl, (0, 0.6, 0.6))


# ------------------------------------------------------------------------------------------- scene effects


def sun_position(when: dt.datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar azimuth and elevation in degrees (NOAA low-precision formulas)."""
    doy = when.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (doy - 1 + (when.hour - 12) / 24)
    decl = 0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma) - 0.006758 * math.cos(2 * gamma)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma))
    solar_minutes = when.hour * 60 + when.minute + eqtime + 4 * lon
    hour_angle = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    zenith = math.acos(max(-1.0, min(1.0, cos_zen)))
    azimuth = math.degrees(math.atan2(math.sin(hour_angle),
                                      math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi))) + 180
    return round(azimuth % 360, 1), round(90 - math.degrees(zenith), 1)


def _clouds(rng: np.random.Generator, valid: np.ndarray, sun: tuple[float, float], res: float):
    """Cloud and heavy/light haze blobs (nested thresholds of one field, thickest toward the sunward
    south-east) and the clouds' shadows, cast away from the sun from a cloud base at 700 m."""
    rows, cols = np.indices(valid.shape)
    ramp = 1.2 * (rows / valid.shape[0] + cols / valid.shape[1] - 1)
    field = smooth_noise(rng, valid.shape, 40) + ramp
    q_cloud, q_heavy, q_light = np.quantile(field[valid], [0.93, 0.88, 0.79])
    cloud = valid & (field > q_cloud)
    heavy = valid & (field > q_heavy) & ~cloud
    light = valid & (field > q_light) & ~cloud & ~heavy
    away, offset_px = math.radians(sun[0] + 180), 700 / math.tan(math.radians(sun[1])) / res
    shift = (round(-offset_px * math.cos(away)), round(offset_px * math.sin(away)))
    shadow = ndimage.shift((cloud | heavy).astype(np.uint8), shift, order=0, cval=0).astype(bool)
    shadow &= valid & ~(cloud | heavy | light)
    return {"cloud": cloud, "heavy_haze": heavy, "light_haze": light, "shadow": shadow}


def render_scene(
    seed: int, geo: SceneGeometry, master: MasterGrid, refl_year: np.ndarray, sun: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """SR (4, rows, cols) uint16 and udm2 (8, rows, cols) uint8 of one scene."""
    rng = rng_for(seed, geo.plan.item_id)
    grid = geo.grid
    xx, yy = grid.centers()
    if grid.res == master.grid.res:  # PSScene: a window of the master grid
        r0 = round((master.grid.top - grid.top) / grid.res)
        c0 = round((grid.left - master.grid.left) / grid.res)
        window = np.s_[r0 : r0 + grid.rows, c0 : c0 + grid.cols]
        refl = refl_year[(slice(None), *window)].copy()
        slope, aspect = master.slope[window], master.aspect[window]
    else:
        refl = np.stack([master.grid.sample(b, xx, yy) for b in refl_year])
        slope, aspect = master.grid.sample(master.slope, xx, yy), master.grid.sample(master.aspect, xx, yy, 0)
    azimuth, elevation = sun
    zenith = math.radians(90 - elevation)
    incidence = math.cos(zenith) * np.cos(slope) + math.sin(zenith) * np.sin(slope) * np.cos(
        math.radians(azimuth) - aspect)
    refl *= np.clip(0.55 + 0.45 * incidence / math.cos(zenith), 0.45, 1.4)
    doy = geo.plan.acquired.timetuple().tm_yday
    gain = rng.uniform(0.93, 1.07) * rng.normal(1, 0.02, 4) * np.array([1, 1, 1, 1 - 0.0025 * max(0, doy - 205)])
    refl = refl * gain[:, None, None].astype(np.float32)
    refl += rng.normal(0, 1, refl.shape).astype(np.float32) * (0.002 + 0.012 * refl)

    valid = grid.mask([geo.footprint])
    flags = _clouds(rng, valid, sun, grid.res) if geo.plan.cloudy else {}
    empty = np.zeros(valid.shape, bool)
    cloud, heavy, light, shadow = (flags.get(k, empty) for k in ("cloud", "heavy_haze", "light_haze", "shadow"))
    haze_tint = np.array([1.3, 1.15, 1.0, 0.8], np.float32)[:, None]
    refl[:, cloud] = 0.5 * refl[:, cloud] + 0.42
    refl[:, heavy] += 0.11 * haze_tint
    refl[:, light] += 0.045 * haze_tint
    refl[:, shadow] *= 0.42
    sr = np.where(valid, np.clip(np.round(refl * 10000), 10, 65535), 0).astype(np.uint16)  # never 0 or 1 inside

    flagged = cloud | heavy | light | shadow
    near_flag = ndimage.distance_transform_edt(~flagged) if flagged.any() else np.full(valid.shape, np.inf)
    confidence = np.clip(90 - 20 * np.exp(-near_flag / 15) + rng.integers(-2, 3, valid.shape), 0, 100)
    unusable = np.where(valid, np.where(cloud, 2, 0), 1)  # UDM1 bits: 0 blackfill, 1 cloud
    layers = [valid & ~flagged, empty, shadow, light, heavy, cloud, np.where(valid, confidence, 0), unusable]
    return sr, np.stack(layers).astype(np.uint8)


# ------------------------------------------------------------------------------------------- writing


def write_scene(folder: Path, geo: SceneGeometry, sr: np.ndarray, udm2: np.ndarray, crs: str,
                sun: tuple[float, float]) -> None:
    """SR GeoTIFF, udm2 GeoTIFF and the Data API metadata JSON, named as Planet delivers them."""
    plan = geo.plan
    if plan.item_type == "PSScene":
        sr_name, udm_name = f"{plan.item_id}_3B_AnalyticMS_SR_clip.tif", f"{plan.item_id}_3B_udm2_clip.tif"
    else:
        sr_name, udm_name = f"{plan.item_id}_BGRN_SR.tif", f"{plan.item_id}_udm2.tif"
    tags = {"TIFFTAG_DATETIME": f"{plan.acquired:%Y:%m:%d %H:%M:%S}"}
    write_tif(folder / sr_name, sr, crs, geo.grid.transform, nodata=0, descriptions=SR_BANDS, tags=tags)
    write_tif(folder / udm_name, udm2, crs, geo.grid.transform, nodata=None, descriptions=UDM2_BANDS, tags=tags)
    meta = planet_metadata(geo, udm2, crs, sun)
    with atomic_path(folder / f"{plan.item_id}_metadata.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def planet_metadata(geo: SceneGeometry, udm2: np.ndarray, crs: str, sun: tuple[float, float]) -> dict:
    """A Planet Data API item (GeoJSON Feature) with the quality percentages computed from the udm2."""
    plan, grid = geo.plan, geo.grid
    valid = udm2[7] & 1 == 0
    n_valid = max(int(valid.sum()), 1)

    def percent(band: int) -> int:
        return round(100 * int(udm2[band][valid].astype(bool).sum()) / n_valid)

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    footprint = shapely.transform(geo.footprint, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
    rng = rng_for(0, plan.item_id + "meta")
    properties = {
        "acquired": plan.acquired.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "anomalous_pixels": 0,
        "clear_confidence_percent": int(np.round(udm2[6][valid].mean())) if valid.any() else 0,
        "clear_percent": percent(0),
        "cloud_cover": round(percent(5) / 100, 2),
        "cloud_percent": percent(5),
        "columns": grid.cols,
        "epsg_code": int(crs.split(":")[1]),
        "ground_control": True,
        "gsd": round(float(rng.uniform(3.6, 4.1)), 1),
        "heavy_haze_percent": percent(4),
        "instrument": plan.instrument,
        "item_type": plan.item_type,
        "light_haze_percent": percent(3),
        "origin_x": _number(grid.left),
        "origin_y": _number(grid.top),
        "pixel_resolution": _number(grid.res),
        "provider": "planetscope",
        "published": (plan.acquired + dt.timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "publishing_stage": "finalized",
        "quality_category": "standard",
        "rows": grid.rows,
        "satellite_id": plan.satellite_id,
        "shadow_percent": percent(2),
        "snow_ice_percent": percent(1),
        "strip_id": plan.ortho_strip or str(int(rng.integers(1_000_000, 9_999_999))),
        "sun_azimuth": sun[0],
        "sun_elevation": sun[1],
        "updated": (plan.acquired + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "view_angle": round(float(rng.uniform(0.5, 4.5)), 1),
        "visible_percent": 100 - percent(5) - percent(4),
    }
    if plan.item_type == "PSOrthoTile":
        properties["grid_cell"] = GRID_CELL
        properties["black_fill"] = round(1 - n_valid / valid.size, 2)
        properties["usable_data"] = round(percent(0) / 100, 2)
    return {"id": plan.item_id, "type": "Feature", "geometry": mapping(footprint), "properties": properties}


def _number(value: float) -> int | float:
    """Whole numbers as JSON integers, as Planet writes them."""
    return int(value) if float(value).is_integer() else float(value)


def observed_area(region: Polygon) -> BaseGeometry:
    """Where every year has at least one scene: features placed here are seen in every year."""
    geos = [scene_geometry(p, region) for p in SCENE_PLAN]
    per_year = [unary_union([g.footprint for g in geos if g.plan.acquired.year == y]) for y in YEARS]
    area = per_year[0]
    for other in per_year[1:]:
        area = area.intersection(other)
    return area

