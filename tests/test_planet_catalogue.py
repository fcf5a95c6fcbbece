"""Registering PlanetScope downloads as STAC items in a stac-geoparquet catalogue.

Uses the real PSScene in ``shared/data/planetscope`` (legacy PSScene4Band with a 1-band UDM) and its
``udm2/`` subfolder (a udm2 without SR), plus small fake scenes written with rasterio in tmp_path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry
from pystac.extensions.projection import ProjectionExtension

from darts_core.planet_catalogue import (
    PlanetAssets,
    SceneInputError,
    cloud_cover_percent,
    find_planet_assets,
    footprint_bbox,
    read_catalogue,
    register_scene_folders,
    scene_item,
)

REAL_ID = "20160909_213104_0e19"
REAL_UDM2_ONLY_ID = "20200814_024229_65_2278"
GOOD_ID = "20210801_201500_11_24af"
BAD_ID = "20210805_101010_12_abcd"
TILE_ID = "4577307_1468121_2021-07-21_2407"
TIMESTAMP_FIELDS = ("datetime", "created", "updated")


# --- fake scenes ------------------------------------------------------------------------------------


def write_geotiff(path: Path, bands: int, dtype: str, shape: tuple[int, int] = (40, 60), x0: float = 6e5):
    """A small 3 m GeoTIFF in EPSG:32603 (random, so it does not compress: truncation hits data)."""
    data = np.random.default_rng(0).integers(1, 200, size=(bands, *shape)).astype(dtype)
    transform = rasterio.Affine(3, 0, x0, 0, -3, 7330000)
    grid = dict(width=shape[1], height=shape[0], crs="EPSG:32603", transform=transform)
    with rasterio.open(path, "w", driver="GTiff", count=bands, dtype=dtype, nodata=0, **grid) as dst:
        dst.write(data)


def scene_files(folder: Path, item_id: str) -> dict[str, Path]:
    """Planet's file names for a fake scene (PSOrthoTile when the id has that layout)."""
    if item_id.count("_") == 3 and "-" in item_id:
        names = {"sr": "_BGRN_SR.tif", "udm2": "_udm2.tif"}
    else:
        names = {"sr": "_3B_AnalyticMS_SR_clip.tif", "udm2": "_3B_udm2_clip.tif"}
    names["metadata"] = "_metadata.json"
    return {asset: folder / f"{item_id}{suffix}" for asset, suffix in names.items()}


def write_scene(folder: Path, item_id: str, **planet_properties) -> dict[str, Path]:
    """A small valid scene: 4-band uint16 SR, 8-band udm2, metadata.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = scene_files(folder, item_id)
    write_geotiff(files["sr"], 4, "uint16")
    write_geotiff(files["udm2"], 8, "uint8")
    ring = [[-163.0, 66.0], [-162.9, 66.0], [-162.9, 66.1], [-163.0, 66.1], [-163.0, 66.0]]
    properties = {
        "acquired": "2021-08-01T20:15:00.110000Z",
        "item_type": "PSOrthoTile" if "-" in item_id else "PSScene",
        "cloud_cover": 0.1,
        "instrument": "PSB.SD",
        "satellite_id": item_id[-4:],
        "strip_id": "4812345",
        "quality_category": "standard",
        "ground_control": True,
        "gsd": 3.7,
        "published": "2021-08-02T01:00:00Z",
        "updated": "2021-08-03T01:00:00Z",
    } | planet_properties
    metadata = {"id": item_id, "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    files["metadata"].write_text(json.dumps(metadata | {"properties": properties}))
    return files


def edit_metadata(path: Path, **changes) -> None:
    metadata = json.loads(path.read_text())
    metadata.update(changes.pop("top", {}))
    metadata["properties"].update(changes)
    path.write_text(json.dumps(metadata))


def truncate_to_half(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def without_timestamps(item: dict) -> dict:
    return {**item, "properties": {k: v for k, v in item["properties"].items() if k not in TIMESTAMP_FIELDS}}


def assert_same_as_stored(stored: dict, built: dict) -> None:
    """Items equal up to rustac's millisecond timestamps."""
    assert without_timestamps(stored) == without_timestamps(built)
    for key in TIMESTAMP_FIELDS:
        moment = dt.datetime.fromisoformat(built["properties"][key])
        expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        assert dt.datetime.fromisoformat(stored["properties"][key]) == expected


@pytest.fixture
def real_folder(shared_data: Path) -> Path:
    return shared_data / "planetscope"


# --- the real scene ---------------------------------------------------------------------------------


def test_real_scene_item(real_folder: Path) -> None:
    assets = find_planet_assets(real_folder)
    assert (assets.item_id, assets.item_type, assets.udm2) == (REAL_ID, "PSScene", None)
    assert assets.udm.name == f"{REAL_ID}_3B_AnalyticMS_DN_udm_clip.tif"

    item = scene_item(assets)
    footprint = json.loads((real_folder / f"{REAL_ID}_metadata.json").read_text())["geometry"]
    assert item["id"] == REAL_ID and item["collection"] == "planet"
    assert item["geometry"] == footprint
    assert item["bbox"] == pytest.approx(list(shapely.geometry.shape(footprint).bounds))
    properties = item["properties"]
    assert properties["datetime"] == "2016-09-09T21:31:04.252895Z"
    assert properties["proj:code"] == "EPSG:32603"
    assert properties["proj:shape"] == [1697, 1122]
    assert properties["proj:transform"] == [3.0, 0.0, 598998.0, 0.0, -3.0, 7333266.0]
    assert properties["proj:bbox"] == [598998.0, 7328175.0, 602364.0, 7333266.0]
    assert properties["eo:cloud_cover"] == 0
    assert properties["darts:year"] == 2016
    assert properties["pl:item_type"] == "PSScene"  # Planet's legacy "PSScene4Band"
    assert (properties["constellation"], properties["platform"], properties["instruments"]) == (
        "planetscope",
        "0e19",
        ["PS2"],
    )
    assert properties["view:sun_elevation"] == 27.6 and properties["view:off_nadir"] == 3.5
    assert set(item["assets"]) == {"sr", "udm", "metadata"}
    sr = item["assets"]["sr"]
    assert [band["name"] for band in sr["bands"]] == ["blue", "green", "red", "nir"]
    assert [band["eo:common_name"] for band in sr["bands"]] == ["blue", "green", "red", "nir"]
    assert all(band["nodata"] == 0 and band["raster:scale"] == 0.0001 for band in sr["bands"])
    assert sr["type"] == "image/tiff; application=geotiff" and sr["roles"] == ["data", "reflectance"]
    assert item["assets"]["udm"]["roles"] == ["data-mask"]
    assert item["assets"]["metadata"]["type"] == "application/json"
    assert sr["href"] == str(real_folder / f"{REAL_ID}_3B_AnalyticMS_SR_clip.tif")


def test_real_item_is_stac(real_folder: Path) -> None:
    """pystac reads it back unchanged (jsonschema is not installed, so no schema validation);
    every extension prefix used is declared."""
    item = scene_item(find_planet_assets(real_folder))
    stac_item = pystac.Item.from_dict(item)
    assert stac_item.to_dict() == item
    assert stac_item.datetime == dt.datetime(2016, 9, 9, 21, 31, 4, 252895, tzinfo=dt.UTC)
    assert ProjectionExtension.ext(stac_item).code == "EPSG:32603"
    keys = set(item["properties"]) | {key for band in item["assets"]["sr"]["bands"] for key in band}
    prefixes = {key.split(":")[0] for key in keys if ":" in key} - {"pl", "darts"}
    declared = {url.split("/")[3] for url in item["stac_extensions"]}
    assert {{"proj": "projection"}.get(prefix, prefix) for prefix in prefixes} <= declared


def test_register_real_folders_round_trip(real_folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue" / "planet_scenes.parquet"
    report = register_scene_folders([real_folder, real_folder / "udm2"], catalogue)

    assert report.registered == [REAL_ID]
    assert list(report.failed) == [REAL_UDM2_ONLY_ID]
    assert REAL_UDM2_ONLY_ID in report.failed[REAL_UDM2_ONLY_ID]
    assert "SR GeoTIFF missing" in report.failed[REAL_UDM2_ONLY_ID]

    [stored] = read_catalogue(catalogue)
    assert stored["properties"]["datetime"] == "2016-09-09T21:31:04.252Z"  # rustac keeps milliseconds
    assert stored["properties"]["proj:transform"] == [3.0, 0.0, 598998.0, 0.0, -3.0, 7333266.0]
    assert_same_as_stored(stored, scene_item(find_planet_assets(real_folder)))
    assert [path.name for path in catalogue.parent.iterdir()] == [catalogue.name]  # no temp file left


def test_reregistration_is_idempotent(real_folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "planet_scenes.parquet"
    register_scene_folders([real_folder], catalogue)
    before = (catalogue.read_bytes(), catalogue.stat().st_mtime_ns)

    report = register_scene_folders([real_folder], catalogue)

    assert report.registered == [REAL_ID] and not report.failed
    assert (catalogue.read_bytes(), catalogue.stat().st_mtime_ns) == before


def test_new_scenes_are_appended_and_replacements_keep_their_place(real_folder: Path, tmp_path: Path) -> None:
    catalogue = tmp_path / "planet_scenes.parquet"
    later = tmp_path / "later"
    files = write_scene(later, GOOD_ID)
    register_scene_folders([real_folder], catalogue)
    register_scene_folders([later], catalogue)
    write_scene(tmp_path / "tiles", TILE_ID)
    edit_metadata(files["metadata"], cloud_cover=0.5)

    register_scene_folders([tmp_path / "tiles", later, real_folder], catalogue)

    items = read_catalogue(catalogue)
    assert [item["id"] for item in items] == [REAL_ID, GOOD_ID, TILE_ID]
    assert items[1]["properties"]["eo:cloud_cover"] == 50.0
    assert items[2]["properties"]["pl:item_type"] == "PSOrthoTile"
    assert [band["name"] for band in items[2]["assets"]["udm2"]["bands"]][-1] == "unusable"


def test_href_root(real_folder: Path, tmp_path: Path) -> None:
    item = scene_item(find_planet_assets(real_folder), href_root="gs://bucket/planet/")
    root = "gs://bucket/planet/planetscope"
    assert item["assets"]["sr"]["href"] == f"{root}/{REAL_ID}_3B_AnalyticMS_SR_clip.tif"
    assert item["assets"]["metadata"]["href"] == f"{root}/{REAL_ID}_metadata.json"
    catalogue = tmp_path / "planet_scenes.parquet"
    register_scene_folders([real_folder], catalogue, href_root="gs://bucket/planet")
    assert read_catalogue(catalogue)[0]["assets"]["udm"]["href"].startswith("gs://bucket/planet/planetscope/")


# --- finding files ----------------------------------------------------------------------------------


def test_flat_folder_with_several_scenes(tmp_path: Path) -> None:
    write_scene(tmp_path, GOOD_ID)
    write_scene(tmp_path, TILE_ID)
    (tmp_path / "manifest.json").write_text("{}")  # Planet order files that are not scenes are ignored

    with pytest.raises(SceneInputError, match="exactly one scene") as error:
        find_planet_assets(tmp_path)
    assert error.value.item == str(tmp_path)
    assert find_planet_assets(tmp_path, TILE_ID).sr.name == f"{TILE_ID}_BGRN_SR.tif"
    report = register_scene_folders([tmp_path], tmp_path / "cat.parquet")
    assert report.registered == [GOOD_ID, TILE_ID] and not report.failed


def test_id_is_checked_before_any_path_is_built(tmp_path: Path) -> None:
    write_scene(tmp_path / "outside", "x")  # would be found as "scenes/../outside/x_*" without the check
    (tmp_path / "scenes").mkdir()
    with pytest.raises(SceneInputError, match="not a Planet") as error:
        find_planet_assets(tmp_path / "scenes", "../outside/x")
    assert error.value.item == "../outside/x"
    assert error.value.reason in str(error.value)


def test_files_not_named_by_a_planet_id(tmp_path: Path) -> None:
    write_scene(tmp_path, GOOD_ID)
    (tmp_path / "notes_metadata.json").write_text("{}")
    report = register_scene_folders([tmp_path, tmp_path / "missing"], tmp_path / "cat.parquet")
    assert report.registered == [GOOD_ID]
    assert "not a Planet" in report.failed["notes"]
    assert "not a folder" in report.failed[str(tmp_path / "missing")]


# --- bad scenes -------------------------------------------------------------------------------------


def rewrite_sr(bands: int, dtype: str = "uint16") -> Callable[[dict[str, Path]], None]:
    return lambda files: write_geotiff(files["sr"], bands, dtype)


BAD_SCENES: dict[str, tuple[Callable[[dict[str, Path]], None], str]] = {
    "missing SR": (lambda files: files["sr"].unlink(), "SR GeoTIFF missing"),
    "8-band SR only": (
        lambda files: files["sr"].rename(str(files["sr"]).replace("_SR_clip", "_SR_8b_clip")),
        "8-band SR not supported",
    ),
    "missing metadata": (lambda files: files["metadata"].unlink(), "metadata file"),
    "metadata not JSON": (lambda files: files["metadata"].write_text("{not json"), "cannot read"),
    "no mask": (lambda files: files["udm2"].unlink(), "no usable data mask"),
    "truncated SR": (lambda files: truncate_to_half(files["sr"]), f"{BAD_ID}_3B_AnalyticMS_SR_clip.tif"),
    "truncated udm2": (lambda files: truncate_to_half(files["udm2"]), f"{BAD_ID}_3B_udm2_clip.tif: "),
    "SR not a GeoTIFF": (lambda files: files["sr"].write_bytes(b"II*\0garbage"), "cannot read"),
    "unknown item type": (
        lambda files: edit_metadata(files["metadata"], item_type="REOrthoTile"),
        "unknown item type 'REOrthoTile'",
    ),
    "item type not matching id": (
        lambda files: edit_metadata(files["metadata"], item_type="PSOrthoTile"),
        "does not match the id layout",
    ),
    "escaping id in metadata": (lambda files: edit_metadata(files["metadata"], top={"id": "../x"}), "'../x'"),
    "other id in metadata": (lambda files: edit_metadata(files["metadata"], top={"id": GOOD_ID}), "holds id"),
    "3-band SR": (rewrite_sr(3), "has 3 bands of uint16, expected 4 uint16"),
    "float SR": (rewrite_sr(4, "float32"), "expected 4 uint16"),
    "4-band udm2": (lambda files: write_geotiff(files["udm2"], 4, "uint8"), "has 4 bands, expected 8"),
    "udm2 shape differs": (
        lambda files: write_geotiff(files["udm2"], 8, "uint8", shape=(40, 61)),
        "is not on the grid",
    ),
    "udm2 shifted": (lambda files: write_geotiff(files["udm2"], 8, "uint8", x0=600003), "is not on the grid"),
    "cloud cover out of range": (lambda files: edit_metadata(files["metadata"], cloud_cover=250), "0-100"),
    "no acquired time": (lambda files: edit_metadata(files["metadata"], acquired=None), "acquired"),
    "no footprint": (lambda files: edit_metadata(files["metadata"], top={"geometry": None}), "footprint"),
}


@pytest.mark.parametrize("case", list(BAD_SCENES))
def test_bad_scene_is_reported_and_others_registered(case: str, tmp_path: Path) -> None:
    spoil, reason = BAD_SCENES[case]
    downloads = tmp_path / "downloads"
    write_scene(downloads, GOOD_ID)  # flat beside the bad one
    spoil(write_scene(downloads, BAD_ID))
    write_scene(tmp_path / "tiles", TILE_ID)
    catalogue = tmp_path / "planet_scenes.parquet"

    report = register_scene_folders([downloads, tmp_path / "tiles"], catalogue)

    assert list(report.failed) == [BAD_ID]
    assert report.failed[BAD_ID].startswith(f"scene {BAD_ID}: ")
    assert reason in report.failed[BAD_ID]
    assert report.registered == [GOOD_ID, TILE_ID]
    assert [item["id"] for item in read_catalogue(catalogue)] == [GOOD_ID, TILE_ID]
    assert not (tmp_path / "x").exists()


def test_scene_item_raises_naming_item_and_file(tmp_path: Path) -> None:
    files = write_scene(tmp_path, BAD_ID)
    truncate_to_half(files["sr"])
    assets = PlanetAssets(BAD_ID, "PSScene", files["sr"], files["udm2"], None, files["metadata"])
    with pytest.raises(SceneInputError) as error:
        scene_item(assets)
    assert error.value.item == BAD_ID
    assert files["sr"].name in error.value.reason
    assert str(error.value) == f"scene {BAD_ID}: {error.value.reason}"


def test_nothing_registered_leaves_no_catalogue(tmp_path: Path) -> None:
    files = write_scene(tmp_path, BAD_ID)
    files["sr"].unlink()
    report = register_scene_folders([tmp_path], tmp_path / "cat.parquet")
    assert report.registered == [] and BAD_ID in report.failed
    assert not (tmp_path / "cat.parquet").exists() and read_catalogue(tmp_path / "cat.parquet") == []


# --- conversions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("planet", "percent"), [(0, 0), (0.02, 2), (0.355, 35.5), (1, 100), (35, 35)])
def test_cloud_cover_percent(planet: float, percent: float) -> None:
    assert cloud_cover_percent(planet) == percent


def test_cloud_cover_in_item_is_percent(tmp_path: Path) -> None:
    write_scene(tmp_path, GOOD_ID, cloud_cover=0.02)
    assert scene_item(find_planet_assets(tmp_path))["properties"]["eo:cloud_cover"] == 2.0


def test_bbox_across_the_antimeridian() -> None:
    east = shapely.geometry.box(179.5, 66.0, 180.0, 66.2)
    west = shapely.geometry.box(-180.0, 66.0, -179.6, 66.2)
    split = shapely.geometry.MultiPolygon([east, west])
    assert footprint_bbox(split) == pytest.approx([179.5, 66.0, -179.6, 66.2])
    assert footprint_bbox(east) == [179.5, 66.0, 180.0, 66.2]


def test_catalogue_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write leaves the previous catalogue in place and no temp file behind."""
    write_scene(tmp_path / "a", GOOD_ID)
    write_scene(tmp_path / "b", TILE_ID)
    catalogue = tmp_path / "out" / "planet_scenes.parquet"
    register_scene_folders([tmp_path / "a"], catalogue)
    before = catalogue.read_bytes()

    def failing_replace(*args) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        register_scene_folders([tmp_path / "b"], catalogue)
    assert catalogue.read_bytes() == before
    assert [path.name for path in catalogue.parent.iterdir()] == [catalogue.name]
