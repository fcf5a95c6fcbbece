"""Auxiliary layers on a scene's grid (design brief stage 3): relative elevation, slope, TCVIS, water mask.

Reads the rasters (paths, URLs, VRTs) it is handed with rasterio; knows nothing of services.

Coverage rule: every layer counts the scene-grid pixels it could fill from real source data (source
nodata and pixels outside the source do not count). When that fraction is below ``min_coverage``
(default 1.0: the scene must be covered completely) an :class:`AuxCoverageError` names the layer, the
source and the grid. Below 1.0, the gaps are explicit, never silent zeros: NaN in relative elevation and
slope, True (= masked as water) in the water mask. TCVIS (uint8) has no spare value: its gaps are 0,
which is why partial coverage must be asked for explicitly.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Proj, Transformer
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from darts_core.params import TerrainParams
from darts_core.rasters import Grid
from darts_core.terrain import relative_elevation, slope_horn

TCVIS_BANDS: tuple[str, ...] = ("tc_brightness", "tc_greenness", "tc_wetness")
WARP_TOLERANCE_PX = 1e-3  # coordinate approximation error allowed in warps, in source pixels
VRT_NODATA = -9999.0
BOUNDS_DENSIFY_POINTS = 21


class AuxCoverageError(Exception):
    """An auxiliary source does not cover (enough of) the scene grid."""

    def __init__(self, layer: str, source: str, grid: Grid, covered_fraction: float, min_coverage: float):
        self.layer, self.source, self.grid = layer, source, grid
        self.covered_fraction, self.min_coverage = covered_fraction, min_coverage
        bounds = ", ".join(f"{value:.2f}" for value in grid.bounds)
        super().__init__(
            f"{layer} source {source} covers {covered_fraction:.2%} of the scene grid "
            f"({grid.width}x{grid.height} px, {grid.crs}, bounds {bounds}); "
            f"at least {min_coverage:.2%} required (min_coverage)"
        )


class AuxSourceError(ValueError):
    """An auxiliary source is not usable as that layer (band count, data type, CRS, alignment)."""


def grid_tiles(grid: Grid, max_px: int) -> Iterator[tuple[int, int, Grid]]:
    """(row_off, col_off, subgrid) tiles of at most ``max_px`` x ``max_px`` covering ``grid``."""
    for row_off in range(0, grid.height, max_px):
        for col_off in range(0, grid.width, max_px):
            height, width = min(max_px, grid.height - row_off), min(max_px, grid.width - col_off)
            yield row_off, col_off, grid.subgrid(row_off, col_off, height, width)


def check_min_coverage(min_coverage: float) -> None:
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")


def check_coverage(layer: str, source: str, grid: Grid, covered: np.ndarray, min_coverage: float) -> None:
    """Raise :class:`AuxCoverageError` when the covered fraction of the grid is below ``min_coverage``."""
    check_min_coverage(min_coverage)
    fraction = float(np.count_nonzero(covered)) / covered.size
    if fraction < min_coverage:
        raise AuxCoverageError(layer, source, grid, fraction, min_coverage)


def check_bands(dataset: DatasetReader, count: int, layer: str, source: str, dtype: str | None = None) -> None:
    if dataset.count != count:
        raise AuxSourceError(f"{layer} source {source} has {dataset.count} band(s); {count} expected")
    if dtype is not None and set(dataset.dtypes) != {dtype}:
        raise AuxSourceError(f"{layer} source {source} has data type(s) {set(dataset.dtypes)}; {dtype} expected")


# --- terrain ----------------------------------------------------------------------------------------


def ground_pixel_size_m(crs: CRS | str, transform: Affine, shape: tuple[int, int], source: str) -> float:
    """True ground size in metres of the (square) pixels of a projected DEM grid, at its centre.

    The CRS unit is converted to metres and the projection's scale factor at the grid centre is taken
    out (e.g. EPSG:3413 is true to scale only at 70 N: 1.4 % off at 66 N). Geographic CRSs, rotated or
    non-square pixels raise :class:`AuxSourceError`.
    """
    crs = CRS.from_user_input(crs)
    if crs.is_geographic or not crs.is_projected:
        raise AuxSourceError(
            f"DEM source {source} has a geographic CRS ({crs.to_string()}): relative elevation and slope need "
            "a projected DEM in metres (e.g. ArcticDEM in EPSG:3413)"
        )
    if transform.b != 0 or transform.d != 0 or not math.isclose(abs(transform.a), abs(transform.e), rel_tol=1e-6):
        raise AuxSourceError(f"DEM source {source} needs square, north-up pixels; its transform is {transform}")
    unit_to_m = crs.axis_info[0].unit_conversion_factor
    centre = transform @ (shape[1] / 2, shape[0] / 2)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(*centre)
    scale = math.sqrt(Proj(crs).get_factors(lon, lat).areal_scale)
    return abs(transform.a) * unit_to_m / scale


def check_dem_buffer(params: TerrainParams, pixel_size_m: float) -> None:
    """The DEM buffer must hold the disk, the slope window and the cubic kernel (3 DEM pixels)."""
    needed = params.tpi_radius_m + 3 * pixel_size_m
    if params.dem_buffer_m < needed:
        raise ValueError(
            f"dem_buffer_m={params.dem_buffer_m} m is too small: at least tpi_radius_m + 3 DEM pixels = "
            f"{needed:.1f} m keeps the scene's disk means and slopes free of window-edge effects"
        )


def buffered_bounds(grid: Grid, crs: CRS | str, buffer_m: float) -> tuple[float, float, float, float]:
    """The grid's bounds in ``crs`` (densified edges), grown by ``buffer_m`` metres."""
    left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=BOUNDS_DENSIFY_POINTS)
    buffer = buffer_m / CRS.from_user_input(crs).axis_info[0].unit_conversion_factor
    return left - buffer, bottom - buffer, right + buffer, top + buffer


def outer_window(bounds: tuple[float, float, float, float], transform: Affine) -> Window:
    """The whole-pixel window of ``transform`` that contains ``bounds``."""
    window = from_bounds(*bounds, transform=transform)
    col0, row0 = math.floor(window.col_off + 1e-6), math.floor(window.row_off + 1e-6)
    col1 = math.ceil(window.col_off + window.width - 1e-6)
    row1 = math.ceil(window.row_off + window.height - 1e-6)
    return Window(col0, row0, col1 - col0, row1 - row0)


def aligned_grid(bounds: tuple[float, float, float, float], crs: str, resolution: float) -> Grid:
    """A north-up grid of ``resolution`` whose pixel edges are multiples of it, containing ``bounds``."""
    left, bottom = math.floor(bounds[0] / resolution), math.floor(bounds[1] / resolution)
    right, top = math.ceil(bounds[2] / resolution), math.ceil(bounds[3] / resolution)
    transform = Affine(resolution, 0.0, left * resolution, 0.0, -resolution, top * resolution)
    return Grid(crs, transform, right - left, top - bottom)


def read_window(
    dataset: DatasetReader, window: Window, layer: str, source: str, grid: Grid, min_coverage: float = 1.0
) -> np.ndarray:
    """Band 1 in ``window`` as float64 with NaN for nodata and for the part outside the dataset."""
    try:
        inner = window.intersection(Window(0, 0, dataset.width, dataset.height))
    except WindowError:
        raise AuxCoverageError(layer, source, grid, 0.0, min_coverage) from None
    inner = Window(*(int(value) for value in inner.flatten()))
    if inner.width <= 0 or inner.height <= 0:
        raise AuxCoverageError(layer, source, grid, 0.0, min_coverage)
    values = np.full((int(window.height), int(window.width)), np.nan)
    row, col = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
    data = dataset.read(1, window=inner, masked=True).astype(np.float64)
    values[row : row + inner.height, col : col + inner.width] = data.filled(np.nan)
    return values


@contextmanager
def in_memory_dataset(bands: np.ndarray, transform: Affine, crs: CRS | str) -> Iterator[DatasetReader]:
    """Float bands (n, H, W; NaN = nodata) as an in-memory GeoTIFF dataset."""
    profile = {"driver": "GTiff", "count": bands.shape[0], "height": bands.shape[1], "width": bands.shape[2]}
    profile |= {"dtype": bands.dtype.name, "crs": crs, "transform": transform, "nodata": np.nan}
    with MemoryFile() as memory_file:
        with memory_file.open(**profile) as dataset:
            dataset.write(bands)
        with memory_file.open() as dataset:
            yield dataset


def warped_to_grid(dataset: DatasetReader, grid: Grid, resampling: Resampling, **options) -> WarpedVRT:
    """``dataset`` warped onto ``grid`` with a near-exact coordinate transformation.

    GDAL's default approximation (1/8 source pixel) would move class boundaries by up to 1/8 of a
    source pixel (~1 m for 10 m land cover); :data:`WARP_TOLERANCE_PX` keeps it negligible.
    """
    return WarpedVRT(
        dataset,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        tolerance=WARP_TOLERANCE_PX,
        **options,
    )


def resample_arrays(
    bands: np.ndarray, transform: Affine, crs: CRS | str, grid: Grid, resampling: Resampling
) -> np.ndarray:
    """Float bands (n, H, W; NaN = nodata) resampled onto ``grid``; NaN where nothing valid maps (float32)."""
    with in_memory_dataset(bands.astype(np.float32), transform, crs) as dataset:
        with warped_to_grid(dataset, grid, resampling, src_nodata=np.nan, nodata=np.nan) as warped:
            return warped.read()


def terrain_from_dem(
    elevation: np.ndarray,
    transform: Affine,
    crs: CRS | str,
    grid: Grid,
    params: TerrainParams,
    source: str,
    min_coverage: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Relative elevation (m) and slope (deg) computed on a DEM window (NaN = nodata), resampled to ``grid``."""
    pixel_size = ground_pixel_size_m(crs, transform, elevation.shape, source)
    check_dem_buffer(params, pixel_size)
    layers = np.stack(
        [relative_elevation(elevation, pixel_size, params.tpi_radius_m), slope_horn(elevation, pixel_size, pixel_size)]
    )
    relative, slope = resample_arrays(layers, transform, crs, grid, Resampling[params.dem_resampling])
    covered = np.isfinite(relative) & np.isfinite(slope)
    check_coverage("DEM (relative elevation, slope)", source, grid, covered, min_coverage)
    return relative, slope


def terrain_on_grid(
    dem_source: str,
    grid: Grid,
    params: TerrainParams,
    min_coverage: float = 1.0,
    source_name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Relative elevation (m) and slope (deg), float32 on the scene grid, from a projected DEM.

    Reads only the DEM window around the scene (bounds in the DEM CRS plus ``params.dem_buffer_m``) at
    native resolution, computes both layers there and resamples them onto the grid
    (``params.dem_resampling``, cubic). Memory is proportional to that window, not to the mosaic.
    ``source_name`` names the DEM in errors (default: ``dem_source``).
    """
    check_min_coverage(min_coverage)
    name = source_name or dem_source
    with rasterio.open(dem_source) as dem:
        check_bands(dem, 1, "DEM", name)
        ground_pixel_size_m(dem.crs, dem.transform, dem.shape, name)  # fail before reading
        window = outer_window(buffered_bounds(grid, dem.crs, params.dem_buffer_m), dem.transform)
        elevation = read_window(dem, window, "DEM", name, grid, min_coverage)
        transform, crs = dem.transform @ Affine.translation(window.col_off, window.row_off), dem.crs
    return terrain_from_dem(elevation, transform, crs, grid, params, name, min_coverage)


# --- categorical layers -------------------------------------------------------------------------------


def read_on_grid(dataset: DatasetReader, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """All bands nearest-neighbour on ``grid`` ((n, H, W), source dtype) and where they hold source data.

    Source nodata and pixels outside the source are not covered. GDAL reads only the source blocks the
    grid needs.
    """
    with warped_to_grid(dataset, grid, Resampling.nearest, add_alpha=True) as warped:
        bands = warped.read()
    return bands[:-1], bands[-1] > 0


def tcvis_from_values(
    values: np.ndarray, covered: np.ndarray, source: str, grid: Grid, min_coverage: float = 1.0
) -> np.ndarray:
    """TCVIS (3, H, W) uint8 from resampled values; coverage checked, gaps 0."""
    check_coverage("TCVIS", source, grid, covered, min_coverage)
    if values[:, covered].size and (values[:, covered].min() < 0 or values[:, covered].max() > 255):
        raise AuxSourceError(f"TCVIS source {source} has values outside 0..255")
    return np.where(covered, values, 0).astype(np.uint8)


def tcvis_on_grid(tcvis_source: str, grid: Grid, min_coverage: float = 1.0) -> np.ndarray:
    """The 3 TCVIS bands (brightness, greenness, wetness trends), uint8 (3, H, W), nearest neighbour."""
    check_min_coverage(min_coverage)
    with rasterio.open(tcvis_source) as dataset:
        check_bands(dataset, 3, "TCVIS", tcvis_source, dtype="uint8")
        values, covered = read_on_grid(dataset, grid)
    return tcvis_from_values(values, covered, tcvis_source, grid, min_coverage)


def water_mask_from_classes(
    classes: np.ndarray,
    covered: np.ndarray,
    water_classes: Sequence[int],
    source: str,
    grid: Grid,
    min_coverage: float = 1.0,
) -> np.ndarray:
    """True where the land-cover class is water or (when partial coverage is allowed) unknown."""
    if len(water_classes) == 0:
        raise ValueError("water_classes is empty: the water mask would be silently all False")
    check_coverage("land cover (water mask)", source, grid, covered, min_coverage)
    return np.isin(classes, list(water_classes)) | ~covered


def water_mask_on_grid(
    landcover_source: str, grid: Grid, water_classes: Sequence[int], min_coverage: float = 1.0
) -> np.ndarray:
    """Water mask (bool, H x W) from a 1-band land-cover raster, nearest neighbour.

    Land-cover nodata counts as not covered: an error below ``min_coverage``, else masked (True).
    """
    check_min_coverage(min_coverage)
    with rasterio.open(landcover_source) as dataset:
        check_bands(dataset, 1, "land cover", landcover_source)
        values, covered = read_on_grid(dataset, grid)
    return water_mask_from_classes(values[0], covered, water_classes, landcover_source, grid, min_coverage)


# --- mosaics --------------------------------------------------------------------------------------------


def gdal_path(href: str) -> str:
    """A GDAL path for an asset href: http(s) -> /vsicurl/, s3:// -> /vsis3/, gs:// -> /vsigs/."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("file://", "")):
        if href.startswith(scheme):
            return prefix + href[len(scheme) :]
    return href


@dataclass(frozen=True)
class MosaicTile:
    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None


def read_mosaic_tile(href: str) -> MosaicTile:
    """The header of one single-band, north-up mosaic tile."""
    path = gdal_path(href)
    with rasterio.open(path) as dataset:
        check_bands(dataset, 1, "DEM mosaic tile", href)
        if not dataset.transform.is_rectilinear or dataset.transform.e >= 0:
            raise AuxSourceError(f"DEM mosaic tile {href} is not north-up: {dataset.transform}")
        return MosaicTile(path, CRS(dataset.crs), dataset.transform, dataset.width, dataset.height, dataset.nodata)


def mosaic_vrt_xml(hrefs: Sequence[str]) -> str:
    """A GDAL VRT (XML text) mosaicking single-band tiles that share CRS, resolution and pixel alignment."""
    if not hrefs:
        raise ValueError("a mosaic needs at least one tile")
    tiles = [read_mosaic_tile(href) for href in hrefs]
    first = tiles[0]
    res_x, res_y = first.transform.a, first.transform.e
    for tile in tiles[1:]:
        if tile.crs != first.crs or not np.allclose((tile.transform.a, tile.transform.e), (res_x, res_y)):
            raise AuxSourceError(f"DEM mosaic tile {tile.path} differs in CRS or resolution from {first.path}")
    left = min(tile.transform.c for tile in tiles)
    top = max(tile.transform.f for tile in tiles)
    right = max(tile.transform.c + tile.width * res_x for tile in tiles)
    bottom = min(tile.transform.f + tile.height * res_y for tile in tiles)
    width, height = round((right - left) / res_x), round((bottom - top) / res_y)
    root = ElementTree.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ElementTree.SubElement(root, "SRS").text = first.crs.to_wkt()
    ElementTree.SubElement(root, "GeoTransform").text = ", ".join(
        repr(value) for value in (left, res_x, 0.0, top, 0.0, res_y)
    )
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType="Float32", band="1")
    ElementTree.SubElement(band, "NoDataValue").text = repr(VRT_NODATA)
    for tile in tiles:
        band.append(vrt_source(tile, left, top, res_x, res_y))
    return ElementTree.tostring(root, encoding="unicode")


def vrt_source(tile: MosaicTile, left: float, top: float, res_x: float, res_y: float) -> ElementTree.Element:
    col, row = (tile.transform.c - left) / res_x, (tile.transform.f - top) / res_y
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        raise AuxSourceError(f"DEM mosaic tile {tile.path} is not aligned with the mosaic's pixel grid")
    source = ElementTree.Element("ComplexSource")
    ElementTree.SubElement(source, "SourceFilename", relativeToVRT="0").text = tile.path
    ElementTree.SubElement(source, "SourceBand").text = "1"
    size = {"xSize": str(tile.width), "ySize": str(tile.height)}
    ElementTree.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
    ElementTree.SubElement(source, "DstRect", xOff=str(round(col)), yOff=str(round(row)), **size)
    if tile.nodata is not None:
        ElementTree.SubElement(source, "NODATA").text = repr(float(tile.nodata))
    return source
