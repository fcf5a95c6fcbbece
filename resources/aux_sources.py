"""Auxiliary-layer sources: local mosaics, STAC COGs, Earth Engine, behind one interface.

Every source returns the stage-3 layers on the exact scene grid: ``terrain`` (relative elevation m,
slope deg; float32), ``tcvis`` (uint8, 3 x H x W), ``water_mask`` (bool). Terrain is always computed by
``darts_core`` (disk mean, Horn slope) on the DEM's own grid, whichever source delivers the DEM, so the
three sources are interchangeable. This is the only module that talks to services (STAC API, Earth Engine).

Coverage: a source that does not cover the scene grid completely raises ``AuxCoverageError`` unless
``min_coverage`` (fraction of scene pixels, default 1.0) allows the gaps; see ``darts_core.aux_layers``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ee
import numpy as np
from dagster import ConfigurableResource
from pydantic import Field
from pyproj import CRS
from pystac_client import Client
from rasterio.warp import transform_bounds

from darts_core.aux_layers import (
    BOUNDS_DENSIFY_POINTS,
    TCVIS_BANDS,
    AuxCoverageError,
    AuxSourceError,
    Grid,
    aligned_grid,
    buffered_bounds,
    grid_tiles,
    mosaic_vrt_xml,
    tcvis_from_values,
    tcvis_on_grid,
    terrain_from_dem,
    terrain_on_grid,
    water_mask_from_classes,
    water_mask_on_grid,
)
from darts_core.params import TerrainParams
from resources.storage import darts_home

AUX_DIR_ENV = "DARTS_AUX_DIR"
AUX_FOLDER = "aux"
MIN_COVERAGE_DESCRIPTION = "Fraction of scene pixels a source must fill (1.0: complete coverage, else an error)."

# ESRI 10 m Annual LULC (Impact Observatory), as in the sat-io time series: class value -> name. Water is 1.
ESRI_LULC_CLASSES: dict[int, str] = {
    1: "water",
    2: "trees",
    4: "flooded vegetation",
    5: "crops",
    7: "built area",
    8: "bare ground",
    9: "snow/ice",
    10: "clouds",
    11: "rangeland",
}
ESRI_LULC_WATER: tuple[int, ...] = (1,)
EE_DEM_NODATA = -9999.0
EE_VALID_BAND = "valid"
EE_LANDCOVER_BAND = "landcover"


def default_aux_path(name: str) -> str:
    """``$DARTS_AUX_DIR/<name>``; the default folder is the demo region's aux layers."""
    folder = os.environ.get(AUX_DIR_ENV) or str(darts_home() / "demo_region" / AUX_FOLDER)
    return str(Path(folder) / name)


class AuxLayerSource(ConfigurableResource):
    """The interface every auxiliary-layer source implements."""

    min_coverage: float = Field(default=1.0, gt=0.0, le=1.0, description=MIN_COVERAGE_DESCRIPTION)

    def terrain(self, grid: Grid, params: TerrainParams) -> tuple[np.ndarray, np.ndarray]:
        """Relative elevation (m) and slope (deg) on ``grid``, float32."""
        raise NotImplementedError

    def tcvis(self, grid: Grid) -> np.ndarray:
        """TCVIS brightness, greenness, wetness trends on ``grid``: uint8 (3, H, W)."""
        raise NotImplementedError

    def water_mask(self, grid: Grid, water_classes: Sequence[int] | None = None) -> np.ndarray:
        """Water (and unknown land cover) on ``grid``; ``None`` = the water classes of this source's legend."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Source kind and paths/ids, for asset metadata."""
        raise NotImplementedError


class RasterTcvisLandcoverSource(AuxLayerSource):
    """TCVIS and land cover from raster files or URLs (the DEM is up to the subclass)."""

    tcvis_path: str = Field(default_factory=lambda: default_aux_path("tcvis.tif"))
    landcover_path: str = Field(default_factory=lambda: default_aux_path("landcover.tif"))

    def tcvis(self, grid: Grid) -> np.ndarray:
        return tcvis_on_grid(self.tcvis_path, grid, self.min_coverage)

    def water_mask(self, grid: Grid, water_classes: Sequence[int] | None = None) -> np.ndarray:
        classes = TerrainParams().water_classes if water_classes is None else water_classes
        return water_mask_on_grid(self.landcover_path, grid, classes, self.min_coverage)


class LocalMosaicSource(RasterTcvisLandcoverSource):
    """Local (or /vsi-readable) VRT/COG mosaics: what DARTS v1 did, and the default."""

    dem_path: str = Field(default_factory=lambda: default_aux_path("arcticdem_mosaic.vrt"))

    def terrain(self, grid: Grid, params: TerrainParams) -> tuple[np.ndarray, np.ndarray]:
        return terrain_on_grid(self.dem_path, grid, params, self.min_coverage)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "local_mosaic",
            "dem": self.dem_path,
            "tcvis": self.tcvis_path,
            "landcover": self.landcover_path,
            "min_coverage": self.min_coverage,
        }


def lonlat_bbox(grid: Grid, buffer_m: float) -> list[float]:
    """(west, south, east, north) of the grid grown by ``buffer_m`` (west > east across the antimeridian)."""
    bounds = buffered_bounds(grid, grid.crs, buffer_m)
    return list(transform_bounds(grid.crs, "EPSG:4326", *bounds, densify_pts=BOUNDS_DENSIFY_POINTS))


class StacCogSource(RasterTcvisLandcoverSource):
    """ArcticDEM mosaic COGs found in a STAC API; TCVIS and land cover from COG paths/URLs."""

    stac_api_url: str
    dem_collection: str = "arcticdem-mosaics"
    dem_asset_key: str = "dem"
    timeout_s: float = 30.0

    def dem_hrefs(self, grid: Grid, params: TerrainParams) -> list[str]:
        """Hrefs of the DEM assets of the items intersecting the buffered scene; none -> AuxCoverageError."""
        client = Client.open(self.stac_api_url, timeout=self.timeout_s)
        search = client.search(collections=[self.dem_collection], bbox=lonlat_bbox(grid, params.dem_buffer_m))
        items = list(search.items_as_dicts())
        hrefs = [item["assets"][self.dem_asset_key]["href"] for item in items if self.dem_asset_key in item["assets"]]
        if items and not hrefs:
            ids = ", ".join(item["id"] for item in items)
            raise AuxSourceError(f"STAC items {ids} in {self.dem_source_name} have no {self.dem_asset_key!r} asset")
        if not hrefs:
            raise AuxCoverageError("DEM", self.dem_source_name, grid, 0.0, self.min_coverage)
        return hrefs

    @property
    def dem_source_name(self) -> str:
        return f"STAC {self.stac_api_url} collection {self.dem_collection}"

    def terrain(self, grid: Grid, params: TerrainParams) -> tuple[np.ndarray, np.ndarray]:
        hrefs = self.dem_hrefs(grid, params)
        with tempfile.TemporaryDirectory(prefix="darts_dem_mosaic_") as folder:
            vrt = Path(folder) / "dem_mosaic.vrt"
            vrt.write_text(mosaic_vrt_xml(hrefs))
            return terrain_on_grid(str(vrt), grid, params, self.min_coverage, source_name=self.dem_source_name)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "stac_cog",
            "stac_api_url": self.stac_api_url,
            "dem_collection": self.dem_collection,
            "dem_asset_key": self.dem_asset_key,
            "tcvis": self.tcvis_path,
            "landcover": self.landcover_path,
            "min_coverage": self.min_coverage,
        }


# --- Earth Engine: pure request and image builders (no network until computePixels) ---------------------


def grid_crs_fields(grid: Grid) -> dict[str, str]:
    """``crsCode`` for CRSs with an EPSG code, else ``crsWkt``."""
    epsg = CRS.from_user_input(grid.crs).to_epsg()
    return {"crsCode": f"EPSG:{epsg}"} if epsg else {"crsWkt": CRS.from_user_input(grid.crs).to_wkt()}


def build_pixel_request(image: ee.Image, grid: Grid, band_names: Sequence[str]) -> dict[str, Any]:
    """The ``ee.data.computePixels`` request for ``band_names`` of ``image`` on exactly ``grid``."""
    transform = grid.transform
    return {
        "expression": image,
        "fileFormat": "NUMPY_NDARRAY",
        "bandIds": list(band_names),
        "grid": {
            "dimensions": {"width": grid.width, "height": grid.height},
            "affineTransform": {
                "scaleX": transform.a,
                "shearX": transform.b,
                "translateX": transform.c,
                "shearY": transform.d,
                "scaleY": transform.e,
                "translateY": transform.f,
            },
            **grid_crs_fields(grid),
        },
    }


def grid_geometry(grid: Grid) -> ee.Geometry:
    """The grid's footprint as a planar polygon in its own CRS."""
    corners = [list(corner) for corner in grid.corners()]
    return ee.Geometry.Polygon([[*corners, corners[0]]], grid.crs, False)


def dem_image(asset_id: str, band: str, geometry: ee.Geometry) -> ee.Image:
    """The DEM band clipped to ``geometry``; no data (masked or outside) = :data:`EE_DEM_NODATA`."""
    return ee.Image(asset_id).select([band]).toFloat().clip(geometry).unmask(EE_DEM_NODATA, False)


def tcvis_image(asset_id: str, geometry: ee.Geometry) -> ee.Image:
    """The first three bands as :data:`TCVIS_BANDS` plus a 0/1 ``valid`` band, clipped, unmasked to 0."""
    tcvis = ee.Image(asset_id).select([0, 1, 2], list(TCVIS_BANDS))
    valid = tcvis.mask().reduce(ee.Reducer.min()).gt(0).rename(EE_VALID_BAND)
    return tcvis.addBands(valid).clip(geometry).unmask(0, False)


def landcover_image(collection_id: str, geometry: ee.Geometry, year: int | None) -> ee.Image:
    """The land-cover mosaic (latest year on top, or ``year``), clipped; no data = 0 (not an ESRI class)."""
    collection = ee.ImageCollection(collection_id).filterBounds(geometry)
    if year is not None:
        collection = collection.filterDate(f"{year}-01-01", f"{year + 1}-01-01")
    mosaic = collection.sort("system:time_start").mosaic().select([0], [EE_LANDCOVER_BAND])
    return mosaic.clip(geometry).unmask(0, False)


def fetch_pixels(image: ee.Image, grid: Grid, band_names: Sequence[str], max_px: int) -> np.ndarray:
    """``band_names`` of ``image`` on ``grid`` as (n, H, W), fetched in tiles of at most ``max_px`` square."""
    pixels: np.ndarray | None = None
    for row_off, col_off, tile in grid_tiles(grid, max_px):
        block = ee.data.computePixels(build_pixel_request(image, tile, band_names))
        if pixels is None:
            dtype = np.result_type(*(block.dtype[name] for name in band_names))
            pixels = np.empty((len(band_names), *grid.shape), dtype=dtype)
        for index, name in enumerate(band_names):
            pixels[index, row_off : row_off + tile.height, col_off : col_off + tile.width] = block[name]
    assert pixels is not None  # a grid has at least one tile
    return pixels


class EarthEngineSource(AuxLayerSource):
    """Earth Engine assets fetched on exact grids with ``computePixels``; terrain computed locally.

    The DEM is fetched on its native grid (``dem_crs``, ``dem_resolution_m``, pixel edges on multiples of
    the resolution as in the ArcticDEM mosaic) around the scene, in tiles; relative elevation and slope
    are then computed exactly as for the other sources. TCVIS and land cover are fetched on the scene
    grid. Land cover is the ESRI 10 m LULC time series, whose water class is 1 (not WorldCover's 80).
    """

    project: str
    tcvis_asset: str = "users/ingmarnitze/TCTrend_SR_2000-2019_TCVIS"
    landcover_collection: str = "projects/sat-io/open-datasets/landcover/ESRI_Global-LULC_10m_TS"
    landcover_year: int | None = Field(default=None, description="Land-cover year; None: latest on top.")
    dem_asset: str = "UMN/PGC/ArcticDEM/V4/2m_mosaic"
    dem_band: str = "elevation"
    dem_crs: str = "EPSG:3413"
    dem_resolution_m: float = 2.0
    max_request_px: int = Field(default=2048, description="Tile side of one computePixels request (48 MB limit).")

    def initialise(self) -> None:
        """Initialise the Earth Engine client once per process (credentials from the environment)."""
        if not ee.data.is_initialized():
            ee.Initialize(project=self.project)

    def terrain(self, grid: Grid, params: TerrainParams) -> tuple[np.ndarray, np.ndarray]:
        self.initialise()
        bounds = buffered_bounds(grid, self.dem_crs, params.dem_buffer_m)
        dem_grid = aligned_grid(bounds, self.dem_crs, self.dem_resolution_m)
        image = dem_image(self.dem_asset, self.dem_band, grid_geometry(dem_grid))
        elevation = fetch_pixels(image, dem_grid, [self.dem_band], self.max_request_px)[0].astype(np.float64)
        elevation[elevation == EE_DEM_NODATA] = np.nan
        source = f"Earth Engine {self.dem_asset}"
        return terrain_from_dem(elevation, dem_grid.transform, self.dem_crs, grid, params, source, self.min_coverage)

    def tcvis(self, grid: Grid) -> np.ndarray:
        self.initialise()
        image = tcvis_image(self.tcvis_asset, grid_geometry(grid))
        bands = fetch_pixels(image, grid, [*TCVIS_BANDS, EE_VALID_BAND], self.max_request_px)
        source = f"Earth Engine {self.tcvis_asset}"
        return tcvis_from_values(bands[:3], bands[3] > 0, source, grid, self.min_coverage)

    def water_mask(self, grid: Grid, water_classes: Sequence[int] | None = None) -> np.ndarray:
        classes = ESRI_LULC_WATER if water_classes is None else tuple(water_classes)
        unknown = sorted(set(classes) - set(ESRI_LULC_CLASSES))
        if unknown:
            raise AuxSourceError(
                f"classes {unknown} are not in the ESRI 10 m LULC legend of {self.landcover_collection} "
                f"(water is {ESRI_LULC_WATER}; 80 is ESA WorldCover's water): pass None for this source's water"
            )
        self.initialise()
        image = landcover_image(self.landcover_collection, grid_geometry(grid), self.landcover_year)
        values = fetch_pixels(image, grid, [EE_LANDCOVER_BAND], self.max_request_px)[0]
        source = f"Earth Engine {self.landcover_collection}"
        return water_mask_from_classes(values, values > 0, classes, source, grid, self.min_coverage)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "earth_engine",
            "project": self.project,
            "dem_asset": self.dem_asset,
            "dem_band": self.dem_band,
            "dem_crs": self.dem_crs,
            "dem_resolution_m": self.dem_resolution_m,
            "tcvis_asset": self.tcvis_asset,
            "landcover_collection": self.landcover_collection,
            "landcover_year": self.landcover_year,
            "landcover_water_classes": list(ESRI_LULC_WATER),
            "min_coverage": self.min_coverage,
        }
