"""The model input stack: band order, normalisation, invalid pixels, GeoTIFF round trip, quick-look."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image

from darts_core.params import BAND_ORDER_NOTCVIS, BAND_ORDER_TCVIS, BandNormalisation, StackParams
from darts_core.planet import PlanetScene, ndvi, read_planet_assets, read_planet_scene
from darts_core.planet_catalogue import PlanetAssets, find_planet_assets
from darts_core.rasters import Grid, write_geotiff
from darts_core.stack import (
    TCVIS_BANDS,
    build_input_stack,
    read_stack_geotiff,
    stack_quicklook_png,
    stack_validity,
    write_stack_by_blocks,
    write_stack_geotiff,
)

SHAPE = (6, 8)
TRANSFORM = Affine(3, 0, 600000, 0, -3, 7330000)
INVALID_PIXEL = (0, 0)
NAN_PIXEL = (1, 2)
INF_PIXEL = (5, 7)
REFLECTANCE = {"blue": 0.03, "green": 0.06, "red": 0.09, "nir": 0.3}
NDVI = (0.3 - 0.09) / (0.3 + 0.09)
RELATIVE_ELEVATION, SLOPE, TCVIS = -10.0, 45.0, (51, 102, 255)
# Each band's value above, normalised as the design brief says (stage 4), written out by hand.
EXPECTED = {
    "ndvi": (NDVI + 1) / 2,
    "blue": 0.1,  # 0.03 / 0.3
    "green": 0.2,
    "red": 0.3,
    "nir": 1.0,
    "relative_elevation": 0.4,  # (-10 + 50) / 100
    "slope": 0.5,  # 45 / 90
    "tc_brightness": 0.2,  # 51 / 255
    "tc_greenness": 0.4,
    "tc_wetness": 1.0,
}


def synthetic_scene(shape: tuple[int, int] = SHAPE) -> PlanetScene:
    reflectance = np.stack([np.full(shape, value, dtype=np.float32) for value in REFLECTANCE.values()])
    valid = np.ones(shape, dtype=bool)
    valid[INVALID_PIXEL] = False
    reflectance *= valid
    return PlanetScene(
        item_id="20210801_201500_11_24af",
        item_type="PSScene",
        acquired=dt.datetime(2021, 8, 1, 20, 15, tzinfo=dt.UTC),
        crs="EPSG:32603",
        transform=TRANSFORM,
        width=shape[1],
        height=shape[0],
        reflectance=reflectance,
        ndvi=ndvi(reflectance[2], reflectance[3], valid),
        valid=valid,
        footprint=shapely.box(600000, 7330000 - 3 * shape[0], 600000 + 3 * shape[1], 7330000),
        mask_kind="udm2",
        valid_fraction=float(valid.mean()),
    )


def aux_layers(shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    relative_elevation = np.full(shape, RELATIVE_ELEVATION, dtype=np.float32)
    relative_elevation[NAN_PIXEL] = np.nan
    slope = np.full(shape, SLOPE, dtype=np.float32)
    slope[INF_PIXEL] = np.inf
    tcvis = np.stack([np.full(shape, value, dtype=np.uint8) for value in TCVIS])
    return relative_elevation, slope, tcvis


@pytest.fixture
def scene() -> PlanetScene:
    return synthetic_scene()


def test_band_order_and_normalisation(scene: PlanetScene) -> None:
    stack = build_input_stack(scene, *aux_layers())
    assert stack.dtype == np.float32 and stack.shape == (10, *SHAPE)
    good = stack_validity(scene, *aux_layers())
    for index, name in enumerate(BAND_ORDER_TCVIS):
        np.testing.assert_allclose(stack[index][good], EXPECTED[name], rtol=1e-6, err_msg=name)


def test_invalid_pixels_are_zeroed(scene: PlanetScene) -> None:
    stack = build_input_stack(scene, *aux_layers())
    valid = stack_validity(scene, *aux_layers())
    assert valid.sum() == valid.size - 3
    for pixel in (INVALID_PIXEL, NAN_PIXEL, INF_PIXEL):
        assert not valid[pixel]
        assert stack[(slice(None), *pixel)].tolist() == [0.0] * 10
    assert np.isfinite(stack).all() and (stack[:, valid] > 0).all()


def test_custom_invalid_value_and_band_order(scene: PlanetScene) -> None:
    bands = ("slope", "nir", "ndvi")
    params = StackParams(bands=bands, invalid_value=-1.0)
    stack = build_input_stack(scene, *aux_layers(), params)
    assert stack[(slice(None), *INF_PIXEL)].tolist() == [-1.0] * 3
    valid = stack_validity(scene, *aux_layers(), params)
    assert valid[NAN_PIXEL]  # only the layers of the bands used count: relative elevation is not
    assert [float(band[valid][0]) for band in stack] == pytest.approx([EXPECTED[name] for name in bands])


def test_normalisation_comes_from_params(scene: PlanetScene) -> None:
    normalisation = {**StackParams().normalisation, "slope": BandNormalisation(offset=-45.0, scale=2.0)}
    params = StackParams(bands=("slope",), normalisation=normalisation)
    stack = build_input_stack(scene, *aux_layers(), params)
    assert stack[0, 3, 3] == 0.0  # (45 - 45) / 2


def test_notcvis_has_seven_bands_and_needs_no_tcvis(scene: PlanetScene) -> None:
    relative_elevation, slope, _ = aux_layers()
    stack = build_input_stack(scene, relative_elevation, slope, None, StackParams(bands=BAND_ORDER_NOTCVIS))
    assert stack.shape == (7, *SHAPE)
    tcvis_stack = build_input_stack(scene, *aux_layers())
    np.testing.assert_array_equal(stack, tcvis_stack[:7])


def test_tcvis_required_for_tcvis_bands(scene: PlanetScene) -> None:
    relative_elevation, slope, _ = aux_layers()
    with pytest.raises(ValueError, match="tcvis is required"):
        build_input_stack(scene, relative_elevation, slope, None)


@pytest.mark.parametrize("layer", ["relative_elevation", "slope", "tcvis"])
def test_shape_mismatch_names_the_layer(scene: PlanetScene, layer: str) -> None:
    layers = dict(zip(("relative_elevation", "slope", "tcvis"), aux_layers(), strict=True))
    layers[layer] = layers[layer][..., :-1]
    with pytest.raises(ValueError, match=f"{layer} has shape"):
        build_input_stack(scene, **layers)


def test_unknown_band(scene: PlanetScene) -> None:
    with pytest.raises(ValueError, match="unknown stack bands \\['swir'\\]"):
        build_input_stack(scene, *aux_layers(), StackParams(bands=("ndvi", "swir")))


def test_real_scene_optical_bands_are_raw_over_3000(shared_data: Path) -> None:
    folder = shared_data / "planetscope"
    item = "20160909_213104_0e19"
    scene = read_planet_scene(
        folder / f"{item}_3B_AnalyticMS_SR_clip.tif",
        folder / f"{item}_3B_AnalyticMS_DN_udm_clip.tif",
        folder / f"{item}_metadata.json",
    )
    zeros = np.zeros(scene.shape, dtype=np.float32)
    stack = build_input_stack(scene, zeros, zeros, None, StackParams(bands=BAND_ORDER_NOTCVIS))
    with rasterio.open(folder / f"{item}_3B_AnalyticMS_SR_clip.tif") as source:
        raw = source.read()
    np.testing.assert_allclose(stack[1:5][:, scene.valid], raw[:, scene.valid] / 3000.0, rtol=1e-6)
    assert not stack[:, ~scene.valid].any()


# --- GeoTIFF ---------------------------------------------------------------------------------------


@pytest.fixture
def big_stack() -> tuple[PlanetScene, np.ndarray]:
    """Larger than one 256 px tile, so tiling is visible."""
    shape = (300, 520)
    scene = synthetic_scene(shape)
    return scene, build_input_stack(scene, *aux_layers(shape))


def test_geotiff_round_trip(big_stack: tuple[PlanetScene, np.ndarray], tmp_path: Path) -> None:
    scene, stack = big_stack
    path = tmp_path / "stacks" / "scene.tif"
    extra = {"item_id": scene.item_id, "aux_sources": {"dem": "arcticdem"}}
    write_stack_geotiff(path, stack, scene.crs, scene.transform, StackParams(), extra)
    assert [p.name for p in path.parent.iterdir()] == ["scene.tif"]  # no temporary file left
    read, profile, bands, normalisation = read_stack_geotiff(path)
    np.testing.assert_array_equal(read, stack)
    assert bands == BAND_ORDER_TCVIS
    assert normalisation == {name: StackParams().normalisation[name] for name in BAND_ORDER_TCVIS}
    assert profile["dtype"] == "float32" and profile["count"] == 10 and profile["nodata"] is None
    assert (profile["blockxsize"], profile["blockysize"], profile["tiled"]) == (256, 256, True)
    assert (profile["crs"].to_string(), profile["transform"]) == ("EPSG:32603", TRANSFORM)
    with rasterio.open(path) as source:
        tags = source.tags()
        assert source.descriptions == BAND_ORDER_TCVIS
        assert source.compression.value == "ZSTD"
        assert source.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
    assert json.loads(tags["bands"]) == list(BAND_ORDER_TCVIS)
    assert json.loads(tags["normalisation"])["relative_elevation"] == {"offset": 50.0, "scale": 100.0}
    assert json.loads(tags["darts_stack_params"])["invalid_value"] == 0.0
    assert tags["item_id"] == scene.item_id and json.loads(tags["aux_sources"]) == {"dem": "arcticdem"}


def test_geotiff_notcvis_tags(big_stack: tuple[PlanetScene, np.ndarray], tmp_path: Path) -> None:
    scene, stack = big_stack
    params = StackParams(bands=BAND_ORDER_NOTCVIS)
    write_stack_geotiff(tmp_path / "s.tif", stack[:7], scene.crs, scene.transform, params)
    _, profile, bands, normalisation = read_stack_geotiff(tmp_path / "s.tif")
    assert profile["count"] == 7 and bands == BAND_ORDER_NOTCVIS and list(normalisation) == list(bands)


def test_geotiff_band_count_must_match_params(big_stack: tuple[PlanetScene, np.ndarray], tmp_path: Path) -> None:
    scene, stack = big_stack
    with pytest.raises(ValueError, match="does not match the 10 bands"):
        write_stack_geotiff(tmp_path / "s.tif", stack[:7], scene.crs, scene.transform)
    assert not any(tmp_path.iterdir())


def test_read_rejects_a_plain_geotiff(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    grid = dict(width=4, height=4, crs="EPSG:32603", transform=TRANSFORM)
    with rasterio.open(path, "w", driver="GTiff", count=1, dtype="float32", **grid) as sink:
        sink.write(np.zeros((1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="not a DARTS input stack"):
        read_stack_geotiff(path)


# --- quick-look ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bands", "panels"), [(BAND_ORDER_TCVIS, 3), (("blue", "green", "red"), 1)])
def test_quicklook_png_decodes(big_stack: tuple[PlanetScene, np.ndarray], bands: tuple[str, ...], panels: int) -> None:
    _, stack = big_stack
    selected = stack[[BAND_ORDER_TCVIS.index(name) for name in bands]]
    image = Image.open(io.BytesIO(stack_quicklook_png(selected, bands)))
    assert image.format == "PNG" and image.mode == "RGB"
    assert max(image.size) <= 512
    panel_width = (image.width - 2 * (panels - 1)) / panels
    assert panel_width == pytest.approx(image.height * 520 / 300, abs=2)
    assert np.asarray(image).any()


# --- block by block ----------------------------------------------------------------------------------


REAL_ITEM = "20160909_213104_0e19"


def real_scene_with_aux(folder: Path, tmp_path: Path) -> tuple[PlanetAssets, Path, Path]:
    """The real PlanetScope scene's assets and terrain/TCVIS rasters on its grid (with non-finite pixels)."""
    assets = find_planet_assets(folder)
    grid = Grid.from_raster(str(assets.sr))
    rng = np.random.default_rng(3)
    terrain = rng.normal(0, 5, (2, *grid.shape)).astype(np.float32)
    terrain[0, :40, :60] = np.nan
    tcvis = rng.integers(0, 255, (3, *grid.shape), dtype=np.uint8).astype(np.float32)
    write_geotiff(tmp_path / "terrain.tif", terrain, grid, ["relative_elevation", "slope"])
    write_geotiff(tmp_path / "tcvis.tif", tcvis, grid, list(TCVIS_BANDS))
    return assets, tmp_path / "terrain.tif", tmp_path / "tcvis.tif"


@pytest.mark.parametrize("block_rows", [64, 100, 100_000])
def test_stack_by_blocks_equals_the_whole_scene_stack(shared_data: Path, tmp_path: Path, block_rows: int) -> None:
    assets, terrain_path, tcvis_path = real_scene_with_aux(shared_data / "planetscope", tmp_path)
    scene = read_planet_assets(assets)
    with rasterio.open(terrain_path) as terrain, rasterio.open(tcvis_path) as tcvis:
        expected = build_input_stack(scene, *terrain.read(), tcvis.read())
    write_stack_geotiff(tmp_path / "whole.tif", expected, scene.crs, scene.transform, extra_tags={"scene": REAL_ITEM})
    blocks = tmp_path / "blocks.tif"
    valid_fraction = write_stack_by_blocks(
        assets, terrain_path, tcvis_path, blocks, extra_tags={"scene": REAL_ITEM}, block_rows=block_rows
    )
    assert valid_fraction == pytest.approx((expected != 0).any(axis=0).mean())
    with rasterio.open(tmp_path / "whole.tif") as whole, rasterio.open(blocks) as written:
        np.testing.assert_array_equal(written.read(), expected)
        assert written.profile == whole.profile and written.tags() == whole.tags()
        assert written.descriptions == whole.descriptions


def test_stack_by_blocks_refuses_aux_off_the_scene_grid_and_an_empty_stack(shared_data: Path, tmp_path: Path) -> None:
    assets, terrain_path, tcvis_path = real_scene_with_aux(shared_data / "planetscope", tmp_path)
    grid = Grid.from_raster(str(assets.sr))
    shifted = tmp_path / "shifted_terrain.tif"
    write_geotiff(shifted, np.zeros((2, *grid.shape), np.float32), grid.subgrid(1, 0, *grid.shape), ["a", "b"])
    with pytest.raises(ValueError, match="shifted_terrain.tif"):
        write_stack_by_blocks(assets, shifted, tcvis_path, tmp_path / "stack.tif")
    all_nan = tmp_path / "nan_terrain.tif"
    write_geotiff(all_nan, np.full((2, *grid.shape), np.nan, np.float32), grid, ["a", "b"])
    with pytest.raises(ValueError, match="no pixel is valid"):
        write_stack_by_blocks(assets, all_nan, tcvis_path, tmp_path / "stack.tif")
    assert not (tmp_path / "stack.tif").exists()
