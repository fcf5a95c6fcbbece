"""The three auxiliary-layer sources behind one interface.

Local mosaics and STAC COGs run for real (a DEM split into two COG tiles, a VRT, ``rustac serve``).
Earth Engine cannot be reached from here: its client is initialised offline from the algorithm list the
earthengine-api package itself ships for its tests (``ee.apitestcase.GetAlgorithms``), and only the
service boundary (``ee.data.computePixels``) is replaced by a fake that answers from local rasters.

DEM values: DEM_1995 (Norwegian Polar Institute via GlacioHack/xdem), re-georeferenced by 10 m so that
pixel edges fall on multiples of 20 m like a mosaic's.
"""

from __future__ import annotations

import json
from pathlib import Path

import ee
import numpy as np
import pytest
import rasterio
import rustac
from affine import Affine
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping

from darts_core.aux_layers import AuxCoverageError, AuxSourceError, Grid, mosaic_vrt_xml, terrain_on_grid
from darts_core.params import TerrainParams
from resources.aux_sources import (
    EE_DEM_NODATA,
    ESRI_LULC_WATER,
    EarthEngineSource,
    LocalMosaicSource,
    StacCogSource,
    build_pixel_request,
    dem_image,
    grid_geometry,
    landcover_image,
    tcvis_image,
)
from resources.stac import serve_stac_geoparquet

CRS = "EPSG:25833"
DEM_TRANSFORM = Affine(20, 0, 510_800, 0, -20, 8_668_040)  # pixel edges on multiples of 20 m
SPLIT_COL = 150
PARAMS = TerrainParams()
SCENE = Grid(CRS, Affine.translation(511_400.5, 8_667_200.25) @ Affine.rotation(10) @ Affine.scale(3, -3), 1000, 800)
WATER_EDGE_X = 512_600.0


def write_raster(path: Path, bands: np.ndarray, transform: Affine, nodata: float | None = None) -> str:
    bands = bands if bands.ndim == 3 else bands[None]
    profile = {"driver": "COG", "count": bands.shape[0], "dtype": bands.dtype.name, "crs": CRS, "nodata": nodata}
    profile |= {"transform": transform, "width": bands.shape[2], "height": bands.shape[1]}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(bands)
    return str(path)


def dem_item(item_id: str, href: str, collection: str = "arcticdem-mosaics") -> dict:
    with rasterio.open(href) as dataset:
        footprint = transform_geom(CRS, "EPSG:4326", mapping(box(*dataset.bounds)))
    lons, lats = zip(*footprint["coordinates"][0], strict=True)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": collection,
        "geometry": footprint,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": {"datetime": "2023-01-01T00:00:00Z"},
        "links": [],
        "assets": {"dem": {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}},
    }


@pytest.fixture(scope="module")
def aux(shared_data: Path, tmp_path_factory) -> dict[str, str]:
    """A real DEM crop whole and as two COG tiles + VRT; decoys; TCVIS and land cover rasters."""
    folder = tmp_path_factory.mktemp("aux")
    with rasterio.open(shared_data / "dem" / "DEM_1995.tif") as dataset:
        dem = dataset.read(1, window=Window(400, 300, 300, 200))
    dem[5:15, 280:295] = -9999.0  # nodata inside the read window, outside the scene
    paths = {
        "whole": write_raster(folder / "dem_whole.tif", dem, DEM_TRANSFORM, nodata=-9999.0),
        "west": write_raster(folder / "dem_west.tif", dem[:, :SPLIT_COL], DEM_TRANSFORM, nodata=-9999.0),
        "east": write_raster(
            folder / "dem_east.tif", dem[:, SPLIT_COL:], DEM_TRANSFORM @ Affine.translation(SPLIT_COL, 0), -9999.0
        ),
        "decoy": write_raster(folder / "decoy.tif", np.zeros((200, 300), np.float32), DEM_TRANSFORM),
        "far": write_raster(folder / "far.tif", dem, DEM_TRANSFORM @ Affine.translation(3000, 0), -9999.0),
    }
    vrt = folder / "arcticdem_mosaic.vrt"
    vrt.write_text(mosaic_vrt_xml([paths["west"], paths["east"]]))
    paths["vrt"] = str(vrt)
    rng = np.random.default_rng(5)
    tcvis_transform = Affine(30, 0, 510_800, 0, -30, 8_668_040)
    paths["tcvis"] = write_raster(folder / "tcvis.tif", rng.integers(0, 256, (3, 134, 200), np.uint8), tcvis_transform)
    classes = np.full((400, 600), 100, np.uint8)
    classes[:, : int((WATER_EDGE_X - 510_800) / 10)] = 80
    paths["landcover"] = write_raster(folder / "landcover.tif", classes, Affine(10, 0, 510_800, 0, -10, 8_668_040), 0)
    catalogue = folder / "dem_items.parquet"
    items = [dem_item("west", paths["west"]), dem_item("east", paths["east"]), dem_item("far", paths["far"])]
    items.append(dem_item("decoy", paths["decoy"], collection="other-dem"))
    rustac.write_sync(str(catalogue), items)
    paths["catalogue"] = str(catalogue)
    return paths


@pytest.fixture(scope="module")
def local_source(aux) -> LocalMosaicSource:
    return LocalMosaicSource(dem_path=aux["vrt"], tcvis_path=aux["tcvis"], landcover_path=aux["landcover"])


@pytest.fixture(scope="module")
def local_terrain(local_source) -> tuple[np.ndarray, np.ndarray]:
    return local_source.terrain(SCENE, PARAMS)


def test_local_mosaic_terrain_equals_the_unsplit_dem(aux, local_terrain):
    relative, slope = terrain_on_grid(aux["whole"], SCENE, PARAMS)
    assert np.array_equal(local_terrain[0], relative) and np.array_equal(local_terrain[1], slope)
    assert np.isfinite(relative).all() and relative.shape == SCENE.shape


def test_local_mosaic_tcvis_water_and_description(local_source, aux):
    tcvis = local_source.tcvis(SCENE)
    assert tcvis.shape == (3, *SCENE.shape) and tcvis.dtype == np.uint8 and tcvis.std() > 50
    water = local_source.water_mask(SCENE)  # default: TerrainParams().water_classes (WorldCover 80)
    xs, _ = SCENE.transform @ (np.arange(SCENE.width) + 0.5, np.zeros(SCENE.width) + 0.5)
    assert np.array_equal(water[0], xs < WATER_EDGE_X)
    assert local_source.describe() == {
        "kind": "local_mosaic",
        "dem": aux["vrt"],
        "tcvis": aux["tcvis"],
        "landcover": aux["landcover"],
        "min_coverage": 1.0,
    }


def test_mosaic_of_misaligned_tiles_is_rejected(aux, tmp_path):
    shifted = write_raster(
        tmp_path / "shifted.tif", np.ones((10, 10), np.float32), DEM_TRANSFORM @ Affine.translation(0.5, 0)
    )
    with pytest.raises(AuxSourceError, match=r"shifted\.tif is not aligned"):
        mosaic_vrt_xml([aux["west"], shifted])


def test_stac_cog_source_gives_the_local_mosaic_terrain(aux, local_terrain):
    with serve_stac_geoparquet(Path(aux["catalogue"])) as url:
        source = StacCogSource(stac_api_url=url, tcvis_path=aux["tcvis"], landcover_path=aux["landcover"])
        relative, slope = source.terrain(SCENE, PARAMS)
        # both tiles; not the far one, not the overlapping one of another collection
        assert sorted(source.dem_hrefs(SCENE, PARAMS)) == sorted([aux["west"], aux["east"]])
        nowhere = Grid(CRS, Affine(3, 0, 600_000, 0, -3, 8_600_000), 100, 100)
        with pytest.raises(AuxCoverageError, match=r"DEM source STAC http://127\.0\.0\.1:\d+ collection arcticdem"):
            source.terrain(nowhere, PARAMS)
    assert np.allclose(relative, local_terrain[0], atol=1e-5) and np.allclose(slope, local_terrain[1], atol=1e-5)
    assert source.describe()["kind"] == "stac_cog" and source.describe()["stac_api_url"] == url


# --- Earth Engine -------------------------------------------------------------------------------------------


@pytest.fixture
def offline_earth_engine(monkeypatch):
    """The ee client initialised without credentials or network, from its own bundled algorithm list."""
    from ee import apitestcase

    monkeypatch.setattr(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    monkeypatch.setattr(ee.data, "_install_cloud_api_resource", lambda: None)
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    ee.Reset()
    ee.Initialize(None, "", project="offline-test")
    yield
    ee.Reset()


def request_grid(request: dict) -> Grid:
    spec = request["grid"]
    t = spec["affineTransform"]
    transform = Affine(t["scaleX"], t["shearX"], t["translateX"], t["shearY"], t["scaleY"], t["translateY"])
    return Grid(spec["crsCode"], transform, spec["dimensions"]["width"], spec["dimensions"]["height"])


def structured(bands: dict[str, np.ndarray]) -> np.ndarray:
    """What computePixels(NUMPY_NDARRAY) returns: a structured array with one field per band."""
    first = next(iter(bands.values()))
    result = np.empty(first.shape, dtype=[(name, values.dtype) for name, values in bands.items()])
    for name, values in bands.items():
        result[name] = values
    return result


class FakeEarthEngine:
    """Stands in for ee.data.computePixels: answers each request from local rasters on the requested grid."""

    def __init__(self, dem_path: str, source: EarthEngineSource):
        self.source = source
        with rasterio.open(dem_path) as dataset:
            self.dem = dataset.read(1, masked=True).filled(EE_DEM_NODATA)
            self.dem_transform = dataset.transform
        self.requests: list[dict] = []

    def __call__(self, request: dict) -> np.ndarray:
        self.requests.append(request)
        graph = request["expression"].serialize()
        grid = request_grid(request)
        if self.source.dem_asset in graph:
            return structured({"elevation": self.dem_on(grid)})
        rows, cols = np.mgrid[: grid.height, : grid.width]
        xs, _ = grid.transform @ (cols + 0.5, rows + 0.5)
        if self.source.tcvis_asset in graph:
            pattern = (np.floor(xs) % 256).astype(np.uint8)
            return structured(
                {
                    "tc_brightness": pattern,
                    "tc_greenness": pattern,
                    "tc_wetness": pattern,
                    "valid": np.ones(pattern.shape, np.uint8),
                }
            )
        assert self.source.landcover_collection in graph
        return structured({"landcover": np.where(xs < WATER_EDGE_X, 1, 11).astype(np.uint8)})

    def dem_on(self, grid: Grid) -> np.ndarray:
        """The DEM pixels of an aligned, same-resolution grid (outside = no data), by plain slicing."""
        col0, row0 = (round(value) for value in ~self.dem_transform @ (grid.transform.c, grid.transform.f))
        values = np.full(grid.shape, EE_DEM_NODATA, np.float32)
        rows = slice(max(row0, 0), min(row0 + grid.height, self.dem.shape[0]))
        cols = slice(max(col0, 0), min(col0 + grid.width, self.dem.shape[1]))
        values[rows.start - row0 : rows.stop - row0, cols.start - col0 : cols.stop - col0] = self.dem[rows, cols]
        return values


@pytest.fixture
def earth_engine(offline_earth_engine, aux, monkeypatch) -> tuple[EarthEngineSource, FakeEarthEngine]:
    source = EarthEngineSource(project="offline-test", dem_crs=CRS, dem_resolution_m=20.0, max_request_px=64)
    fake = FakeEarthEngine(aux["whole"], source)
    monkeypatch.setattr(ee.data, "computePixels", fake)
    return source, fake


def test_pixel_request_is_the_exact_scene_grid(offline_earth_engine):
    image = dem_image("UMN/PGC/ArcticDEM/V4/2m_mosaic", "elevation", grid_geometry(SCENE))
    request = build_pixel_request(image, SCENE, ["elevation"])
    t = SCENE.transform
    assert request["fileFormat"] == "NUMPY_NDARRAY" and request["bandIds"] == ["elevation"]
    assert request["grid"] == {
        "dimensions": {"width": 1000, "height": 800},
        "affineTransform": {
            "scaleX": t.a,
            "shearX": t.b,
            "translateX": t.c,
            "shearY": t.d,
            "scaleY": t.e,
            "translateY": t.f,
        },
        "crsCode": "EPSG:25833",
    }
    assert request["expression"] is image
    assert t.b != 0 and t.d != 0  # a rotated grid: the shear terms are sent as they are


def test_image_graphs_reference_the_configured_assets(offline_earth_engine):
    geometry = grid_geometry(SCENE)
    dem_graph = json.loads(dem_image("UMN/PGC/ArcticDEM/V4/2m_mosaic", "elevation", geometry).serialize())
    text = json.dumps(dem_graph)
    assert '"functionName": "Image.load"' in text and '"UMN/PGC/ArcticDEM/V4/2m_mosaic"' in text
    assert '"Image.clip"' in text and '"EPSG:25833"' in text and str(EE_DEM_NODATA) in text
    tcvis_text = tcvis_image("users/ingmarnitze/TCTrend_SR_2000-2019_TCVIS", geometry).serialize()
    assert "users/ingmarnitze/TCTrend_SR_2000-2019_TCVIS" in tcvis_text and "tc_greenness" in tcvis_text
    collection = "projects/sat-io/open-datasets/landcover/ESRI_Global-LULC_10m_TS"
    landcover_text = landcover_image(collection, geometry, 2021).serialize()
    assert '"ImageCollection.load"' in landcover_text and collection in landcover_text
    assert "2021-01-01" in landcover_text and '"ImageCollection.mosaic"' in landcover_text


def test_earth_engine_terrain_equals_local_terrain(earth_engine, local_terrain):
    source, fake = earth_engine
    relative, slope = source.terrain(SCENE, PARAMS)
    assert np.allclose(relative, local_terrain[0], atol=1e-5) and np.allclose(slope, local_terrain[1], atol=1e-5)
    grids = [request_grid(request) for request in fake.requests]
    assert len(grids) > 4 and all(g.width <= 64 and g.height <= 64 for g in grids)  # tiled requests
    assert all(g.crs == CRS and g.transform.a == 20 and g.transform.c % 20 == 0 for g in grids)
    assert all(request["bandIds"] == ["elevation"] for request in fake.requests)


def test_earth_engine_tcvis_and_water_are_assembled_on_the_scene_grid(earth_engine):
    source, fake = earth_engine
    rows, cols = np.mgrid[: SCENE.height, : SCENE.width]
    xs, _ = SCENE.transform @ (cols + 0.5, rows + 0.5)
    tcvis = source.tcvis(SCENE)
    assert tcvis.dtype == np.uint8 and np.array_equal(tcvis[1], (np.floor(xs) % 256).astype(np.uint8))
    water = source.water_mask(SCENE)  # None: this source's legend, ESRI LULC water = 1
    assert np.array_equal(water, xs < WATER_EDGE_X)
    with pytest.raises(AuxSourceError, match=r"\[80\] are not in the ESRI 10 m LULC legend"):
        source.water_mask(SCENE, TerrainParams().water_classes)
    assert source.describe()["landcover_water_classes"] == list(ESRI_LULC_WATER)


def test_earth_engine_gaps_are_coverage_errors(earth_engine, monkeypatch):
    source, fake = earth_engine
    monkeypatch.setattr(fake, "dem_on", lambda grid: np.full(grid.shape, EE_DEM_NODATA, np.float32))
    with pytest.raises(AuxCoverageError, match=r"DEM.*Earth Engine UMN/PGC/ArcticDEM/V4/2m_mosaic covers 0\.00%"):
        source.terrain(SCENE, PARAMS)


def test_earth_engine_initialises_with_its_project_when_needed(monkeypatch):
    calls = []
    monkeypatch.setattr(ee.data, "is_initialized", lambda: False)
    monkeypatch.setattr(ee, "Initialize", lambda **kwargs: calls.append(kwargs))
    EarthEngineSource(project="my-ee-project").initialise()
    assert calls == [{"project": "my-ee-project"}]
