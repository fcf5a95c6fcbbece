"""The demo region: a deterministic synthetic piece of the Peel Plateau (NW Canada) in real file formats.

``synthesise_demo_region(root)`` writes, from one seed:

* ``planet/<item_id>/``: PlanetScope PSScene (``*_3B_AnalyticMS_SR_clip.tif``, ``*_3B_udm2_clip.tif``) and
  PSOrthoTile (``*_BGRN_SR.tif``, ``*_udm2.tif``) items with ``*_metadata.json`` for 2018 and 2021-2023;
* ``aux/dem/*_10m_v4.1_dem.tif`` + ``aux/arcticdem_mosaic.vrt`` (ArcticDEM-like, EPSG:3413, 10 m),
  ``aux/landcover.tif`` (WorldCover classes, EPSG:4326), ``aux/tcvis.tif`` (TC trends, EPSG:3413, 30 m);
* ``labels/demo_training_labels.gpkg``: the real training-label schema; RTS with target "Retrogressive
  Thaw Slumps" and ALD with target "Active Layer Detachment Slides" (both are the positive class, as in
  DARTS, whose labels are the bare scar zones of RTS and ALD), only for the labelled scenes;
* ``reference/``: RTS polygons for region West (EPSG:3413), RTS points for region East (EPSG:4326) and
  the two region polygons; ``truth/demo_truth.gpkg``: every feature per year (scene CRS);
* ``demo_region.json`` last: the manifest that :func:`load_demo_region` reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from darts_core import _demo_planet as planet
from darts_core import _demo_terrain as terrain_mod
from darts_core._demo_io import write_gpkg, write_tif
from darts_core._demo_terrain import BARE, YEARS, Grid
from darts_core.atomic import atomic_path

MANIFEST = "demo_region.json"
MANIFEST_VERSION = 1
DEM_NODATA = -9999.0
DEM_CRS, TCVIS_CRS, LANDCOVER_CRS = "EPSG:3413", "EPSG:3413", "EPSG:4326"
WORLDCOVER_RES_DEG = 1 / 12000
TCVIS_BANDS = ("tc_brightness", "tc_greenness", "tc_wetness")
LABEL_TARGETS = {"rts": "Retrogressive Thaw Slumps", "ald": "Active Layer Detachment Slides"}


@dataclass(frozen=True)
class DemoRegionConfig:
    """Everything the synthesis depends on; the defaults run in seconds on 2 CPU cores."""

    seed: int = 7
    epsg: int = 32608  # UTM 8N
    center_lon: float = -135.3  # Peel Plateau, a DARTS validation region
    center_lat: float = 67.3
    width_m: float = 4800.0
    height_m: float = 3600.0
    n_rts: int = 8
    n_ald: int = 3
    n_rock_outcrops: int = 4
    n_sediment_ponds: int = 4
    aux_margin_m: float = 400.0  # DEM, TCVIS and land cover reach this far beyond the region
    dem_res_m: float = 10.0
    dem_tiles: tuple[int, int] = (2, 2)  # rows, cols
    tcvis_res_m: float = 30.0
    region_name: str = "Peel Plateau"


@dataclass(frozen=True)
class DemoScene:
    """One Planet item of the demo and the folder holding its SR, udm2 and metadata files."""

    item_id: str
    item_type: str  # "PSScene" | "PSOrthoTile"
    folder: Path
    year: int
    has_labels: bool


@dataclass(frozen=True)
class DemoRegion:
    """Where everything of one synthesised demo region lies (absolute when ``root`` is)."""

    root: Path
    crs: str
    scenes: tuple[DemoScene, ...]
    dem_vrt: Path
    tcvis: Path
    landcover: Path
    training_labels: Path
    reference_polygons: Path
    reference_points: Path
    truth: Path
    regions: Path  # reference/demo_regions.gpkg: the West (polygons) and East (points) validation regions


class DemoRegionMissingError(FileNotFoundError):
    """The root has no manifest: never synthesised, or the synthesis did not finish."""


def synthesise_demo_region(root: Path, config: DemoRegionConfig = DemoRegionConfig()) -> DemoRegion:
    """Write the demo region under ``root`` (deterministic from ``config.seed``; safe to rerun)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # a rerun in progress is detectable as unfinished
    crs = f"EPSG:{config.epsg}"
    region = _region_polygon(config)
    observed = planet.observed_area(region)
    layout = terrain_mod.make_layout(config.seed, region, observed, config.n_rock_outcrops, config.n_sediment_ponds)
    terrain = terrain_mod.build_terrain(config.seed, layout)
    slumps, alds = terrain_mod.place_disturbances(config.seed, terrain, layout, observed, config.n_rts, config.n_ald)
    truth = gpd.GeoDataFrame(terrain_mod.truth_records(layout, slumps, alds), crs=crs)

    paths = _paths(root)
    _write_dem(paths["dem_vrt"], terrain, region, crs, config)
    _write_landcover(paths["landcover"], terrain, truth, region, crs, config)
    _write_tcvis(paths["tcvis"], terrain, slumps, region, crs, config)
    scenes = _write_scenes(root, config, crs, region, terrain, layout, slumps, alds)
    footprints = {s.plan.item_id: s.footprint for s, _ in scenes}
    _write_labels(paths["training_labels"], truth, [s.plan for s, _ in scenes if s.plan.labelled], footprints,
                  crs, config)
    _write_references(paths, truth, layout, crs)
    write_gpkg(paths["truth"], truth)

    result = DemoRegion(root=root, crs=crs, scenes=tuple(scene for _, scene in scenes), **paths)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "crs": crs,
        "config": asdict(config),
        "scenes": [{**asdict(s), "folder": s.folder.relative_to(root).as_posix()} for s in result.scenes],
        **{name: path.relative_to(root).as_posix() for name, path in paths.items()},
    }
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return result


def load_demo_region(root: Path) -> DemoRegion:
    """The demo region written under ``root`` (from its manifest)."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DemoRegionMissingError(
            f"no demo region at {root}: {MANIFEST} is missing (never synthesised, or the synthesis did not "
            "finish); run darts_core.demo_region.synthesise_demo_region(root)"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise DemoRegionMissingError(
            f"demo region at {root} has manifest version {manifest.get('manifest_version')!r}, expected "
            f"{MANIFEST_VERSION}; synthesise it again"
        )
    scenes = tuple(DemoScene(**{**s, "folder": root / s["folder"]}) for s in manifest["scenes"])
    paths = {name: root / manifest[name] for name in _paths(root)}
    return DemoRegion(root=root, crs=manifest["crs"], scenes=scenes, **paths)


def _paths(root: Path) -> dict[str, Path]:
    return {
        "dem_vrt": root / "aux" / "arcticdem_mosaic.vrt",
        "tcvis": root / "aux" / "tcvis.tif",
        "landcover": root / "aux" / "landcover.tif",
        "training_labels": root / "labels" / "demo_training_labels.gpkg",
        "reference_polygons": root / "reference" / "demo_reference_polygons.gpkg",
        "reference_points": root / "reference" / "demo_reference_points.gpkg",
        "truth": root / "truth" / "demo_truth.gpkg",
        "regions": root / "reference" / "demo_regions.gpkg",
    }


def _region_polygon(config: DemoRegionConfig):
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{config.epsg}", always_xy=True)
    cx, cy = to_utm.transform(config.center_lon, config.center_lat)
    x0 = round((cx - config.width_m / 2) / 30) * 30
    y0 = round((cy - config.height_m / 2) / 30) * 30
    return box(x0, y0, x0 + config.width_m, y0 + config.height_m)


# -------------------------------------------------------------------------------------------- writers


def _aux_bounds(region, crs: str, margin: float, dst_crs: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = region.bounds
    return transform_bounds(crs, dst_crs, x0 - margin, y0 - margin, x1 + margin, y1 + margin, densify_pts=21)


def _warp(source: np.ndarray, src_grid: Grid, crs: str, dst_grid: Grid, dst_crs: str, resampling, dst_nodata):
    out = np.full((source.shape[0], dst_grid.rows, dst_grid.cols), dst_nodata, source.dtype)
    reproject(source, out, src_transform=src_grid.transform, src_crs=crs, dst_transform=dst_grid.transform,
              dst_crs=dst_crs, resampling=resampling, dst_nodata=dst_nodata)
    return out


def _write_dem(vrt_path: Path, terrain, region, crs: str, config: DemoRegionConfig) -> None:
    """ArcticDEM-like 10 m tiles in EPSG:3413 plus a hand-written VRT mosaic of them."""
    res = config.dem_res_m
    grid = Grid.covering(*_aux_bounds(region, crs, config.aux_margin_m, DEM_CRS), res)
    dem = _warp(terrain.dem[None], terrain.grid, crs, grid, DEM_CRS, Resampling.cubic, DEM_NODATA)[0]
    n_rows, n_cols = config.dem_tiles
    row_edges = np.linspace(0, grid.rows, n_rows + 1).astype(int)
    col_edges = np.linspace(0, grid.cols, n_cols + 1).astype(int)
    super_row = int((grid.top + 4_000_000) // 100_000) + 1  # ArcticDEM v4.1 100 km tile index
    super_col = int((grid.left + 4_000_000) // 100_000) + 1
    sources = []
    for i in range(n_rows):
        for j in range(n_cols):
            r0, r1, c0, c1 = row_edges[i], row_edges[i + 1], col_edges[j], col_edges[j + 1]
            name = f"{super_row}_{super_col}_{i + 1}_{j + 1}_10m_v4.1_dem.tif"
            transform = grid.transform @ Affine.translation(c0, r0)
            write_tif(vrt_path.parent / "dem" / name, dem[r0:r1, c0:c1], DEM_CRS, transform, DEM_NODATA,
                      ("elevation",), block=128)
            sources.append(_vrt_source(f"dem/{name}", c0, r0, c1 - c0, r1 - r0))
    wkt = CRS.from_string(DEM_CRS).to_wkt()
    xml = (
        f'<VRTDataset rasterXSize="{grid.cols}" rasterYSize="{grid.rows}">\n'
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{_xml_escape(wkt)}</SRS>\n'
        f"  <GeoTransform>{grid.left!r}, {res!r}, 0.0, {grid.top!r}, 0.0, {-res!r}</GeoTransform>\n"
        '  <VRTRasterBand dataType="Float32" band="1">\n'
        f"    <NoDataValue>{DEM_NODATA}</NoDataValue>\n"
        "    <Description>elevation</Description>\n"
        f"{''.join(sources)}  </VRTRasterBand>\n</VRTDataset>\n"
    )
    with atomic_path(vrt_path) as tmp:
        tmp.write_text(xml)


def _vrt_source(filename: str, x: int, y: int, width: int, height: int) -> str:
    return (
        "    <SimpleSource>\n"
        f'      <SourceFilename relativeToVRT="1">{filename}</SourceFilename>\n'
        "      <SourceBand>1</SourceBand>\n"
        f'      <SourceProperties RasterXSize="{width}" RasterYSize="{height}" DataType="Float32" '
        'BlockXSize="128" BlockYSize="128"/>\n'
        f'      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>\n'
        f'      <DstRect xOff="{x}" yOff="{y}" xSize="{width}" ySize="{height}"/>\n'
        "    </SimpleSource>\n"
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _write_landcover(path: Path, terrain, truth: gpd.GeoDataFrame, region, crs: str, config) -> None:
    """WorldCover-style classes on its 1/12000 degree EPSG:4326 grid; disturbances as of 2021 are bare."""
    classes = terrain.landcover.copy()
    disturbed = truth[(truth.year == 2021) & truth.kind.isin(["rts", "ald"]) & truth.active]
    classes[terrain.grid.mask(list(disturbed.geometry))] = BARE
    grid = Grid.covering(*_aux_bounds(region, crs, config.aux_margin_m, LANDCOVER_CRS), WORLDCOVER_RES_DEG)
    out = _warp(classes[None], terrain.grid, crs, grid, LANDCOVER_CRS, Resampling.nearest, 0)
    write_tif(path, out, LANDCOVER_CRS, grid.transform, nodata=0, descriptions=("Map",))


def _write_tcvis(path: Path, terrain, slumps, region, crs: str, config) -> None:
    """Tasseled-cap trends 2000-2019 (127 = no trend): slumps active before 2019 brighten, lose green
    and dry; everything else (tundra, water, rock, road) is stable apart from noise and slight greening."""
    rng = terrain_mod.rng_for(config.seed, "tcvis")
    shape = terrain.dem.shape
    trend = np.stack([127 + 2.5 * terrain_mod.smooth_noise(rng, shape, 3) for _ in TCVIS_BANDS])
    trend[1] += 3 * (terrain.landcover == terrain_mod.SHRUB)
    old_slumps = terrain.grid.mask([s.footprint(YEARS[0]) for s in slumps if s.start_year <= YEARS[0]])
    trend[:, old_slumps] += np.array([38.0, -40.0, -18.0])[:, None]
    grid = Grid.covering(*_aux_bounds(region, crs, config.aux_margin_m, TCVIS_CRS), config.tcvis_res_m)
    out = _warp(trend.astype(np.float32), terrain.grid, crs, grid, TCVIS_CRS, Resampling.average, 0.0)
    write_tif(path, np.clip(np.round(out), 1, 255).astype(np.uint8), TCVIS_CRS, grid.transform,
              descriptions=TCVIS_BANDS, tags={"PERIOD": "2000-2019", "NO_TREND_VALUE": "127"})


def _write_scenes(root: Path, config, crs, region, terrain, layout, slumps, alds):
    """Render and write every planned scene; returns (geometry, DemoScene) pairs."""
    master = planet.master_fields(config.seed, terrain, region)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    center = to_lonlat.transform(*region.centroid.coords[0])
    out = []
    for year in YEARS:
        refl = planet.year_reflectance(master, layout, slumps, alds, year)
        for plan in (p for p in planet.SCENE_PLAN if p.acquired.year == year):
            geo = planet.scene_geometry(plan, region)
            sun = planet.sun_position(plan.acquired, *center)
            sr, udm2 = planet.render_scene(config.seed, geo, master, refl, sun)
            folder = root / "planet" / plan.item_id
            planet.write_scene(folder, geo, sr, udm2, crs, sun)
            out.append((geo, DemoScene(plan.item_id, plan.item_type, folder, year, plan.labelled)))
    return out


def _write_labels(path: Path, truth: gpd.GeoDataFrame, plans, footprints: dict[str, BaseGeometry], crs: str,
                  config: DemoRegionConfig) -> None:
    """Training labels in the real ML_training_labels schema: active RTS/ALD scars visible in the scene."""
    rows = []
    for plan in plans:
        seen = truth[(truth.year == plan.acquired.year) & truth.kind.isin(list(LABEL_TARGETS)) & truth.active]
        for kind, geom in zip(seen.kind, seen.geometry, strict=True):
            visible = geom.intersection(footprints[plan.item_id])
            if visible.area < 300:
                continue
            rows.append({
                "image_id": plan.item_id,
                "image_date": f"{plan.acquired:%Y-%m-%d}",
                "region": config.region_name,
                "site": "Peel_Plateau_demo",
                "label": 1,
                "id": len(rows),
                "datasource": "PSScene" if plan.item_type == "PSScene" else "PSOrthotile",
                "author": "DARTS demo synthesiser",
                "subset": False,
                "target": LABEL_TARGETS[kind],
                "geometry": visible,
            })
    write_gpkg(path, gpd.GeoDataFrame(rows, crs=crs).to_crs("EPSG:4326"))


def _write_references(paths: dict[str, Path], truth: gpd.GeoDataFrame, layout, crs: str) -> None:
    """RTS polygons per year in region West (EPSG:3413) and RTS points per year in region East (EPSG:4326)."""
    rts = truth[truth.kind == "rts"]
    in_west = {fid for fid, geom in zip(rts.feature_id, rts.geometry, strict=True) if geom.within(layout.west)}
    west, east = rts[rts.feature_id.isin(in_west)], rts[~rts.feature_id.isin(in_west)]
    polygons = gpd.GeoDataFrame({"id": west.feature_id.values, "year": west.year.values, "region": "West",
                                 "source": "demo synthesiser ground truth"}, geometry=west.geometry.values, crs=crs)
    points = gpd.GeoDataFrame({"id": east.feature_id.values, "year": east.year.values, "region": "East"},
                              geometry=east.representative_point().values, crs=crs)
    regions = gpd.GeoDataFrame({"region": ["West", "East"], "reference": ["polygons", "points"]},
                               geometry=[layout.west, layout.east], crs=crs)
    write_gpkg(paths["reference_polygons"], polygons.to_crs("EPSG:3413"))
    write_gpkg(paths["reference_points"], points.to_crs("EPSG:4326"))
    write_gpkg(paths["regions"], regions.to_crs("EPSG:4326"))
