"""PlanetScope ingestion on the real PSScene (legacy UDM), the real udm2, and broken inputs in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
import shapely.geometry

from darts_core.params import PlanetParams
from darts_core.planet import (
    NO_MASK_WARNING,
    PlanetScene,
    read_planet_assets,
    read_planet_scene,
    udm2_valid,
    udm_valid,
)
from darts_core.planet_catalogue import SceneInputError, find_planet_assets

REAL_ID = "20160909_213104_0e19"
UDM2_ID = "20200814_024229_65_2278"
FAKE_ID = "20210801_201500_11_24af"
PARAMS = PlanetParams()


# --- real scene (legacy UDM) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_folder(shared_data: Path) -> Path:
    return shared_data / "planetscope"


@pytest.fixture(scope="module")
def real_files(real_folder: Path) -> dict[str, Path]:
    return {
        "sr": real_folder / f"{REAL_ID}_3B_AnalyticMS_SR_clip.tif",
        "udm": real_folder / f"{REAL_ID}_3B_AnalyticMS_DN_udm_clip.tif",
        "metadata": real_folder / f"{REAL_ID}_metadata.json",
    }


@pytest.fixture(scope="module")
def real_scene(real_files: dict[str, Path]) -> PlanetScene:
    return read_planet_scene(real_files["sr"], real_files["udm"], real_files["metadata"], REAL_ID)


@pytest.fixture(scope="module")
def real_raw(real_files: dict[str, Path]) -> np.ndarray:
    with rasterio.open(real_files["sr"]) as source:
        return source.read()


def test_real_scene_header(real_scene: PlanetScene, real_files: dict[str, Path]) -> None:
    with rasterio.open(real_files["sr"]) as source:
        assert (real_scene.crs, real_scene.transform) == ("EPSG:32603", source.transform)
        assert (real_scene.height, real_scene.width) == source.shape == real_scene.valid.shape
    assert (real_scene.item_id, real_scene.item_type, real_scene.mask_kind) == (REAL_ID, "PSScene", "udm")
    assert real_scene.warning is None
    assert real_scene.acquired == dt.datetime(2016, 9, 9, 21, 31, 4, 252895, tzinfo=dt.UTC)
    assert real_scene.acquired.utcoffset() == dt.timedelta(0)


def test_real_scene_reflectance_and_nodata(real_scene: PlanetScene, real_raw: np.ndarray) -> None:
    assert real_scene.reflectance.dtype == np.float32 and real_scene.reflectance.shape == real_raw.shape
    valid = real_scene.valid
    expected = (real_raw[:, valid] / PARAMS.reflectance_scale).astype(np.float32)
    np.testing.assert_array_equal(real_scene.reflectance[:, valid], expected)
    nodata = np.any(real_raw == PARAMS.sr_nodata, axis=0)
    assert not valid[nodata].any()
    assert not real_scene.reflectance[:, ~valid].any() and not real_scene.ndvi[~valid].any()
    # tundra in September: median reflectance of a few percent in the visible, ~0.2 in the NIR
    medians = np.median(real_scene.reflectance[:, valid], axis=1)
    assert np.all((medians[:3] > 0.02) & (medians[:3] < 0.1)) and 0.15 < medians[3] < 0.25


def test_real_scene_valid_fraction(real_scene: PlanetScene, real_raw: np.ndarray) -> None:
    """The clip is mostly outside the scene; the legacy UDM marks the SR data as usable, except a ~12 px edge
    strip whose visible bands are missing (value 1): 26.5 % of pixels hold data, 25.7 % complete data."""
    assert 0.25 < real_scene.valid_fraction < 0.26  # measured 0.2566
    assert real_scene.valid_fraction == pytest.approx(real_scene.valid.mean())
    any_data = np.all(real_raw != 0, axis=0)
    missing_visible = np.any(real_raw[:3] == 1, axis=0) & any_data
    assert 10_000 < missing_visible.sum() < 20_000
    np.testing.assert_array_equal(real_scene.valid, any_data & ~missing_visible)


def test_real_scene_edge_strip_gives_no_fake_ndvi(real_scene: PlanetScene) -> None:
    assert np.percentile(real_scene.ndvi[real_scene.valid], 99.9) < 0.8


def test_real_scene_ndvi(real_scene: PlanetScene, real_raw: np.ndarray) -> None:
    valid = real_scene.valid
    red, nir = real_raw[2, valid].astype(np.float64), real_raw[3, valid].astype(np.float64)
    np.testing.assert_allclose(real_scene.ndvi[valid], (nir - red) / (nir + red), atol=1e-6)
    assert real_scene.ndvi.dtype == np.float32
    assert real_scene.ndvi.min() >= -1 and real_scene.ndvi.max() <= 1
    assert 0.3 < np.median(real_scene.ndvi[valid]) < 0.6  # vegetated tundra (measured 0.47)
    assert np.percentile(real_scene.ndvi[valid], 1) > -0.2  # lakes and the river pull it down, a little


def test_real_scene_footprint(real_scene: PlanetScene, real_files: dict[str, Path]) -> None:
    footprint = real_scene.footprint
    assert footprint.geom_type in ("Polygon", "MultiPolygon") and footprint.is_valid
    with rasterio.open(real_files["sr"]) as source:
        raster_box = shapely.box(*source.bounds)
    assert raster_box.contains(footprint)
    assert footprint.area < 0.3 * raster_box.area  # the data covers 26.5 % of the bbox
    pixel_area = abs(real_scene.transform.a * real_scene.transform.e)
    assert footprint.area == pytest.approx(real_scene.valid.sum() * pixel_area, rel=0.005)
    # the clip's data lies within Planet's (scene-wide) footprint from metadata.json
    lonlat = json.loads(real_files["metadata"].read_text())["geometry"]
    scene = shapely.geometry.shape(rasterio.warp.transform_geom("EPSG:4326", real_scene.crs, lonlat))
    assert footprint.difference(scene).area < 0.01 * footprint.area


def test_real_scene_found_by_catalogue(real_folder: Path, real_scene: PlanetScene) -> None:
    scene = read_planet_assets(find_planet_assets(real_folder))
    assert scene.mask_kind == "udm"  # no udm2 in the folder: legacy UDM
    np.testing.assert_array_equal(scene.valid, real_scene.valid)


def test_real_scene_without_mask_falls_back_to_data(real_files: dict[str, Path], real_scene: PlanetScene) -> None:
    scene = read_planet_scene(real_files["sr"], None, real_files["metadata"])
    assert (scene.mask_kind, scene.warning) == ("none", NO_MASK_WARNING)
    assert scene.item_id == REAL_ID  # taken from metadata.json
    np.testing.assert_array_equal(scene.valid, real_scene.valid)


def test_real_scene_wrong_item_id(real_files: dict[str, Path]) -> None:
    with pytest.raises(SceneInputError, match="20160909_213104_0e20.*metadata.json holds id"):
        read_planet_scene(real_files["sr"], real_files["udm"], real_files["metadata"], "20160909_213104_0e20")


# --- udm2 semantics --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_udm2(shared_data: Path) -> tuple[Path, np.ndarray]:
    path = shared_data / "planetscope" / "udm2" / f"{UDM2_ID}_3B_udm2_clip.tif"
    with rasterio.open(path) as source:
        return path, source.read()


def test_real_udm2_classes_are_exclusive(real_udm2: tuple[Path, np.ndarray]) -> None:
    _, udm2 = real_udm2
    clear = udm2[0] == 1
    assert not np.any(udm2[1:6][:, clear])  # clear => no snow, shadow, haze or cloud
    valid = udm2_valid(udm2)
    assert not np.any(valid & ~clear) and not np.any(valid & (udm2[7] != 0))


def test_real_udm2_valid_fraction(real_udm2: tuple[Path, np.ndarray], shared_data: Path) -> None:
    """The clip is clear (band 1: 99.6 %); band 8 flags 22.7 % as missing/suspect band data.

    Planet's clear_percent (67) describes the whole 12792 x 9096 scene, of which this clip is 4.7 %,
    so the clip's own classes are the reference here, not the metadata percentages.
    """
    _, udm2 = real_udm2
    properties = json.loads((shared_data / "planetscope" / "udm2" / f"{UDM2_ID}_metadata.json").read_text())[
        "properties"
    ]
    assert udm2[0].size < 0.05 * properties["columns"] * properties["rows"]
    assert (udm2[0] == 1).mean() > 0.99 and not udm2[1:6].any()
    fraction = udm2_valid(udm2).mean()
    assert 0.76 < fraction < 0.78  # measured 0.7729
    assert fraction == pytest.approx(((udm2[0] == 1) & (udm2[7] == 0)).mean())


CLEAR = np.array([1, 0, 0, 0, 0, 0, 90, 0], dtype=np.uint8)


@pytest.mark.parametrize(
    ("band", "value", "valid"),
    [
        (1, 0, False),  # not clear
        (2, 1, False),  # snow
        (3, 1, False),  # shadow
        (4, 1, True),  # light haze is allowed
        (5, 1, False),  # heavy haze
        (6, 1, False),  # cloud
        (7, 0, True),  # confidence is not used
        (7, 100, True),
        (8, 1, False),  # unusable: blackfill
        (8, 4, False),  # unusable: suspect blue band data
        (8, 128, False),
    ],
)
def test_udm2_valid_flags(band: int, value: int, valid: bool) -> None:
    udm2 = np.repeat(CLEAR[:, None, None], 2, axis=2)  # (8, 1, 2): pixel 0 changed, pixel 1 stays clear
    udm2[band - 1, 0, 0] = value
    assert udm2_valid(udm2, PARAMS).tolist() == [[valid, True]]


def test_udm2_valid_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="8, H, W"):
        udm2_valid(np.zeros((4, 2, 2), dtype=np.uint8))


@pytest.mark.parametrize(
    ("value", "valid"), [(0, True), (1, False), (2, False), (4, False), (8, False), (16, False), (64, False)]
)
def test_udm_valid_bits(value: int, valid: bool) -> None:
    """Legacy UDM: bit 0 blackfill, bit 1 cloud, bits 2-6 missing/suspect band data; any bit = unusable."""
    assert udm_valid(np.array([[value]], dtype=np.uint8)).tolist() == [[valid]]


def test_real_udm2_scene_end_to_end(real_udm2: tuple[Path, np.ndarray], shared_data: Path, tmp_path: Path) -> None:
    """A synthetic SR on the real udm2 grid: validity comes from the udm2."""
    udm2_path, udm2 = real_udm2
    with rasterio.open(udm2_path) as source:
        profile = source.profile
    sr_path = tmp_path / f"{UDM2_ID}_3B_AnalyticMS_SR_clip.tif"
    profile.update(count=4, dtype="uint16", nodata=0)
    with rasterio.open(sr_path, "w", **profile) as sink:
        sink.write(np.full((4, *udm2.shape[1:]), 500, dtype=np.uint16))
    metadata = shared_data / "planetscope" / "udm2" / f"{UDM2_ID}_metadata.json"
    scene = read_planet_scene(sr_path, udm2_path, metadata)
    assert (scene.mask_kind, scene.item_id) == ("udm2", UDM2_ID)
    assert scene.valid_fraction == pytest.approx(udm2_valid(udm2).mean())
    assert scene.acquired == dt.datetime(2020, 8, 14, 2, 42, 29, 650061, tzinfo=dt.UTC)


# --- broken inputs ---------------------------------------------------------------------------------


def write_raster(path: Path, data: np.ndarray, crs: str | None = "EPSG:32603", x0: float = 600000.0) -> Path:
    transform = rasterio.Affine(3, 0, x0, 0, -3, 7330000)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype, crs=crs, transform=transform,
    ) as sink:  # fmt: skip
        sink.write(data)
    return path


def write_metadata(path: Path, item_id: str = FAKE_ID, **properties: object) -> Path:
    values = {"acquired": "2021-08-01T20:15:00.110000Z", "item_type": "PSScene", **properties}
    path.write_text(json.dumps({"id": item_id, "type": "Feature", "properties": values}))
    return path


def fake_sr(shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    return np.random.default_rng(1).integers(100, 3000, size=(4, *shape)).astype(np.uint16)


def clear_udm2(shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    udm2 = np.zeros((8, *shape), dtype=np.uint8)
    udm2[0] = 1
    return udm2


@pytest.fixture
def fake_scene(tmp_path: Path) -> dict[str, Path]:
    return {
        "sr": write_raster(tmp_path / f"{FAKE_ID}_3B_AnalyticMS_SR_clip.tif", fake_sr()),
        "udm2": write_raster(tmp_path / f"{FAKE_ID}_3B_udm2_clip.tif", clear_udm2()),
        "metadata": write_metadata(tmp_path / f"{FAKE_ID}_metadata.json"),
    }


def read_fake(files: dict[str, Path]) -> PlanetScene:
    return read_planet_scene(files["sr"], files.get("udm2"), files["metadata"], FAKE_ID)


def test_fake_scene_reads(fake_scene: dict[str, Path]) -> None:
    scene = read_fake(fake_scene)
    assert (scene.mask_kind, scene.valid_fraction, scene.item_type) == ("udm2", 1.0, "PSScene")
    assert scene.footprint.equals(shapely.box(600000, 7330000 - 60, 600090, 7330000))


def test_partly_cloudy_scene(fake_scene: dict[str, Path]) -> None:
    udm2 = clear_udm2()
    udm2[0, :10], udm2[5, :10] = 0, 1  # top half cloud
    write_raster(fake_scene["udm2"], udm2)
    scene = read_fake(fake_scene)
    assert scene.valid_fraction == 0.5 and not scene.reflectance[:, :10].any()
    assert scene.footprint.area == 20 * 30 * 9  # the footprint is the data, not the clear part


def test_all_cloud_scene_is_an_error(fake_scene: dict[str, Path]) -> None:
    udm2 = np.zeros((8, 20, 30), dtype=np.uint8)
    udm2[5] = 1
    write_raster(fake_scene["udm2"], udm2)
    with pytest.raises(SceneInputError, match=f"{FAKE_ID}.*no valid pixel"):
        read_fake(fake_scene)


def test_all_nodata_scene_is_an_error(fake_scene: dict[str, Path]) -> None:
    write_raster(fake_scene["sr"], np.zeros((4, 20, 30), dtype=np.uint16))
    with pytest.raises(SceneInputError, match="no valid pixel"):
        read_fake(fake_scene)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (fake_sr()[:3], "has 3 bands of uint16, expected 4 uint16"),
        (fake_sr().astype(np.float32), "has 4 bands of float32, expected 4 uint16"),
    ],
)
def test_bad_sr_layout(fake_scene: dict[str, Path], data: np.ndarray, message: str) -> None:
    write_raster(fake_scene["sr"], data)
    with pytest.raises(SceneInputError, match=f"{FAKE_ID}.*_SR_clip.tif {message}"):
        read_fake(fake_scene)


def test_sr_without_crs(fake_scene: dict[str, Path]) -> None:
    write_raster(fake_scene["sr"], fake_sr(), crs=None)
    with pytest.raises(SceneInputError, match="_SR_clip.tif has no CRS"):
        read_fake(fake_scene)


@pytest.mark.parametrize(("shape", "x0"), [((20, 31), 600000.0), ((20, 30), 600003.0)], ids=["shape", "shift"])
def test_grid_mismatch(fake_scene: dict[str, Path], shape: tuple[int, int], x0: float) -> None:
    write_raster(fake_scene["udm2"], clear_udm2(shape), x0=x0)
    with pytest.raises(SceneInputError, match="_udm2_clip.tif is not on the grid of"):
        read_fake(fake_scene)


def test_mask_with_wrong_band_count(fake_scene: dict[str, Path]) -> None:
    write_raster(fake_scene["udm2"], clear_udm2()[:3])
    with pytest.raises(SceneInputError, match="has 3 bands, expected 8 \\(udm2\\) or 1 \\(udm\\)"):
        read_fake(fake_scene)


def test_truncated_real_sr(real_files: dict[str, Path], tmp_path: Path) -> None:
    sr = tmp_path / real_files["sr"].name
    sr.write_bytes(real_files["sr"].read_bytes()[: real_files["sr"].stat().st_size // 2])
    with pytest.raises(SceneInputError, match=f"{REAL_ID}: cannot read {sr.name}"):
        read_planet_scene(sr, real_files["udm"], real_files["metadata"])


def test_legacy_udm_when_udm2_missing(fake_scene: dict[str, Path]) -> None:
    folder = fake_scene["sr"].parent
    udm = np.zeros((1, 20, 30), dtype=np.uint8)
    udm[0, :, :15] = 2  # left half cloud (bit 1)
    write_raster(folder / f"{FAKE_ID}_3B_AnalyticMS_DN_udm_clip.tif", udm)
    assert read_planet_assets(find_planet_assets(folder)).mask_kind == "udm2"  # udm2 preferred
    fake_scene["udm2"].unlink()
    scene = read_planet_assets(find_planet_assets(folder))
    assert (scene.mask_kind, scene.valid_fraction) == ("udm", 0.5)


def test_no_mask_fallback(fake_scene: dict[str, Path]) -> None:
    sr = fake_sr()
    sr[:, :5] = 0
    write_raster(fake_scene["sr"], sr)
    scene = read_planet_scene(fake_scene["sr"], None, fake_scene["metadata"])
    assert (scene.mask_kind, scene.warning, scene.valid_fraction) == ("none", NO_MASK_WARNING, 0.75)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (dict(acquired=None), "has no valid acquired time"),
        (dict(acquired="yesterday"), "has no valid acquired time"),
        (dict(item_id="20210801_201500_11_24ae"), "holds id '20210801_201500_11_24ae'"),
        (dict(item_type="REOrthoTile"), "unknown item type 'REOrthoTile'"),
    ],
)
def test_bad_metadata(fake_scene: dict[str, Path], metadata: dict, message: str) -> None:
    write_metadata(fake_scene["metadata"], **metadata)
    with pytest.raises(SceneInputError, match=message):
        read_fake(fake_scene)


def test_unreadable_metadata(fake_scene: dict[str, Path]) -> None:
    fake_scene["metadata"].write_text("{not json")
    with pytest.raises(SceneInputError, match=f"{FAKE_ID}: cannot read {FAKE_ID}_metadata.json"):
        read_fake(fake_scene)
    shutil.copy(fake_scene["sr"], fake_scene["metadata"])
    with pytest.raises(SceneInputError, match="cannot read"):
        read_fake(fake_scene)


def test_naive_acquired_is_utc(fake_scene: dict[str, Path]) -> None:
    write_metadata(fake_scene["metadata"], acquired="2021-08-01T20:15:00")
    assert read_fake(fake_scene).acquired == dt.datetime(2021, 8, 1, 20, 15, tzinfo=dt.UTC)
