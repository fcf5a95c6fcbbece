"""The demo-region synthesiser: real formats, udm2 semantics, plausible spectra and terrain, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio import features
from rasterio.warp import Resampling, reproject
from scipy import ndimage, signal
from shapely.geometry import box, shape

from darts_core.demo_region import (
    DemoRegion,
    DemoRegionConfig,
    DemoRegionMissingError,
    load_demo_region,
    synthesise_demo_region,
)
from darts_core.scene_ids import parse_scene_id

UTM = "EPSG:32608"
REAL_LABEL_COLUMNS = ["image_id", "image_date", "region", "site", "label", "id", "datasource", "author",
                      "subset", "target", "geometry"]
UDM2 = ("clear", "snow", "shadow", "light_haze", "heavy_haze", "cloud", "confidence", "unusable")


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> DemoRegion:
    return synthesise_demo_region(tmp_path_factory.mktemp("demo") / "region")


@pytest.fixture(scope="module")
def truth(region) -> gpd.GeoDataFrame:
    return gpd.read_file(region.truth)


def sr_path(scene) -> Path:
    suffix = "_3B_AnalyticMS_SR_clip.tif" if scene.item_type == "PSScene" else "_BGRN_SR.tif"
    return scene.folder / f"{scene.item_id}{suffix}"


def udm2_path(scene) -> Path:
    suffix = "_3B_udm2_clip.tif" if scene.item_type == "PSScene" else "_udm2.tif"
    return scene.folder / f"{scene.item_id}{suffix}"


def metadata(scene) -> dict:
    return json.loads((scene.folder / f"{scene.item_id}_metadata.json").read_text())


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


def rasterize(geoms, shape_, transform) -> np.ndarray:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape_, bool)
    return features.rasterize([(g, 1) for g in geoms], shape_, transform=transform).astype(bool)


@pytest.fixture(scope="module")
def region_box(region):
    """The demo region (both validation regions) in the scene CRS."""
    return box(*gpd.read_file(region.regions).to_crs(UTM).total_bounds)


@pytest.fixture(scope="module")
def terrain(region, region_box):
    """The delivered DEM warped back to a 5 m UTM grid (region + 200 m), with slope and 100 m-radius TPI."""
    res = 5.0
    x0, y0, x1, y1 = region_box.buffer(200).bounds
    transform = Affine(res, 0, x0, 0, -res, y1)
    dem = np.full((int((y1 - y0) / res), int((x1 - x0) / res)), np.nan, np.float32)
    with rasterio.open(region.dem_vrt) as src:
        reproject(rasterio.band(src, 1), dem, dst_transform=transform, dst_crs=UTM,
                  resampling=Resampling.bilinear, dst_nodata=np.nan)
    gy, gx = np.gradient(ndimage.uniform_filter(dem, 3), res)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    yy, xx = np.mgrid[-20:21, -20:21]
    disk = (np.hypot(xx, yy) <= 20).astype(float)
    tpi = dem - signal.fftconvolve(dem, disk / disk.sum(), mode="same")
    return {"transform": transform, "dem": dem, "slope": slope, "tpi": tpi}


def mean_in(terrain, name: str, geom) -> float:
    mask = rasterize([geom], terrain["dem"].shape, terrain["transform"])
    return float(np.nanmean(terrain[name][mask]))


# ------------------------------------------------------------------------------------------ manifest, ids


def test_manifest_round_trip_and_missing_manifest(region, tmp_path):
    assert load_demo_region(region.root) == region
    with pytest.raises(DemoRegionMissingError, match="demo_region.json is missing"):
        load_demo_region(tmp_path)


def test_scenes_ids_years_and_files(region):
    scenes = region.scenes
    assert 8 <= len(scenes) <= 10
    assert {s.year for s in scenes} == {2018, 2021, 2022, 2023}
    for scene in scenes:
        parsed = parse_scene_id(scene.item_id)
        assert (parsed.item_type, parsed.year) == (scene.item_type, scene.year)
        assert scene.folder == region.root / "planet" / scene.item_id
        assert sr_path(scene).is_file() and udm2_path(scene).is_file()
    assert {s.year for s in scenes if s.item_type == "PSOrthoTile"} >= {2021, 2023}
    assert {s.year for s in scenes if s.has_labels} >= {2018, 2021}
    assert not any(s.has_labels for s in scenes if s.year == 2023)


def test_every_raster_opens(region):
    paths = [*region.root.rglob("*.tif"), region.dem_vrt]
    assert len(paths) == 2 * len(region.scenes) + 4 + 3
    for path in paths:
        with rasterio.open(path) as src:
            assert src.crs is not None and src.count >= 1


# ---------------------------------------------------------------------------------------- planet scenes


def test_sr_format_and_non_rectangular_footprints(region):
    for scene in region.scenes:
        sr, profile = read(sr_path(scene))
        with rasterio.open(sr_path(scene)) as src:
            assert src.descriptions == ("blue", "green", "red", "nir")
            assert src.block_shapes[0] == (256, 256) and src.compression.name == "deflate"
        assert (profile["dtype"], profile["count"], profile["nodata"]) == ("uint16", 4, 0)
        assert profile["crs"].to_string() == UTM
        res = 3.0 if scene.item_type == "PSScene" else 3.125
        assert profile["transform"].a == res and profile["transform"].e == -res
        assert 600 <= min(sr.shape[1:]) and max(sr.shape[1:]) <= 950
        nodata = (sr == 0).all(axis=0)
        assert ((sr == 0).any(axis=0) == nodata).all()  # 0 in one band means 0 in all
        assert 0.4 < 1 - nodata.mean() < 0.97
        corners = nodata[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.any() and not nodata[2:-2].all(axis=1).any()  # rotated / strip-cut, not a cropped box
        if scene.item_type == "PSOrthoTile":
            assert profile["transform"].c % 3.125 == 0 and profile["transform"].f % 3.125 == 0


def test_udm2_semantics_and_the_one_cloudy_scene(region):
    cloudy = []
    for scene in region.scenes:
        udm, profile = read(udm2_path(scene))
        sr, sr_profile = read(sr_path(scene))
        assert (profile["dtype"], profile["count"]) == ("uint8", 8)
        assert profile["transform"] == sr_profile["transform"] and udm.shape[1:] == sr.shape[1:]
        with rasterio.open(udm2_path(scene)) as src:
            assert src.descriptions == UDM2
        inside = (sr > 0).all(axis=0)
        flags = udm[1:6].astype(bool).any(axis=0)
        assert ((udm[0] == 1) == (inside & ~flags)).all()
        assert set(np.unique(udm[:6])) <= {0, 1}
        assert ((udm[7] & 1 == 1) == ~inside).all() and (udm[:7, ~inside] == 0).all()
        assert udm[6].max() <= 100 and udm[6][inside].min() > 50
        if flags.any():
            cloudy.append(scene)
            fractions = {name: udm[i][inside].mean() for i, name in enumerate(UDM2[:6])}
            assert all(fractions[k] > 0.02 for k in ("cloud", "light_haze", "heavy_haze", "shadow"))
            clear_blue = sr[0][udm[0] == 1].mean()
            assert sr[0][udm[5] == 1].mean() > 3 * clear_blue  # clouds are bright
            assert sr[3][udm[2] == 1].mean() < 0.7 * sr[3][udm[0] == 1].mean()  # shadows are dark
            assert (udm[7][udm[5] == 1] == 2).all()  # UDM1 cloud bit
    assert [s.year for s in cloudy] == [2022]


def test_metadata_matches_rasters(region):
    for scene in region.scenes:
        meta = metadata(scene)
        props = meta["properties"]
        udm, profile = read(udm2_path(scene))
        assert meta["id"] == scene.item_id and meta["type"] == "Feature"
        assert props["item_type"] == scene.item_type and props["acquired"][:4] == str(scene.year)
        assert props["acquired"].endswith("Z") and props["acquired"][5:7] in ("07", "08")
        assert (props["columns"], props["rows"]) == (profile["width"], profile["height"])
        assert (props["origin_x"], props["origin_y"]) == (profile["transform"].c, profile["transform"].f)
        assert props["epsg_code"] == 32608 and props["pixel_resolution"] == profile["transform"].a
        inside = udm[7] & 1 == 0
        assert props["cloud_cover"] == pytest.approx(udm[5][inside].mean(), abs=0.01)
        assert props["clear_percent"] == pytest.approx(100 * udm[0][inside].mean(), abs=1)
        lon, lat = shape(meta["geometry"]).centroid.coords[0]
        assert -135.5 < lon < -135.1 and 67.2 < lat < 67.4
        for key in ("satellite_id", "strip_id", "sun_azimuth", "sun_elevation", "view_angle", "instrument",
                    "gsd", "published", "updated", "quality_category", "ground_control", "publishing_stage"):
            assert key in props
        assert 25 < props["sun_elevation"] < 48
        if scene.item_type == "PSOrthoTile":
            assert props["grid_cell"] == scene.item_id.split("_")[1]


def test_footprints_overlap_within_and_across_years(region):
    footprints = {s.item_id: shape(metadata(s)["geometry"]) for s in region.scenes}
    years = {s.item_id: s.year for s in region.scenes}
    for item, footprint in footprints.items():
        others = [f for i, f in footprints.items() if i != item]
        assert any(footprint.intersection(o).area > 0.1 * footprint.area for o in others)
        assert any(footprint.intersects(f) for i, f in footprints.items() if years[i] != years[item])


# ------------------------------------------------------------------------------------------- aux layers


def test_dem_vrt_reads_the_tiles_seamlessly(region):
    tiles = sorted((region.dem_vrt.parent / "dem").glob("*_10m_v4.1_dem.tif"))
    assert len(tiles) == 4
    with rasterio.open(region.dem_vrt) as vrt:
        assert vrt.crs.to_string() == "EPSG:3413" and vrt.res == (10.0, 10.0)
        assert vrt.dtypes[0] == "float32" and vrt.nodata == -9999
        mosaic = vrt.read(1)
        for tile in tiles:
            with rasterio.open(tile) as src:
                assert src.nodata == -9999 and src.profile["tiled"] and src.compression.name == "deflate"
                col, row = map(round, ~vrt.transform @ (src.transform.c, src.transform.f))
                np.testing.assert_array_equal(mosaic[row : row + src.height, col : col + src.width], src.read(1))
    assert (mosaic != -9999).all() and 300 < mosaic.min() and mosaic.max() < 460


def test_landcover_classes_grid_and_cover(region, truth, region_box):
    classes, profile = read(region.landcover)
    assert (profile["dtype"], profile["nodata"], profile["crs"].to_string()) == ("uint8", 0, "EPSG:4326")
    assert profile["transform"].a == pytest.approx(1 / 12000)
    assert set(np.unique(classes)) <= {10, 20, 30, 60, 80, 90, 100}
    with rasterio.open(region.landcover) as src:
        area = box(*src.bounds)
        assert area.contains(box(*gpd.GeoSeries([region_box.buffer(300)], crs=UTM).to_crs(4326).total_bounds))
        in_4326 = truth[truth.year == 2023].to_crs("EPSG:4326")

        def class_at(kind: str) -> list[int]:
            points = in_4326[in_4326.kind == kind].geometry.representative_point()
            return [int(v[0]) for v in src.sample([(p.x, p.y) for p in points])]

        assert set(class_at("lake")) == {80} and set(class_at("sediment_pond")) <= {80, 90}
        assert set(class_at("rock_outcrop")) == {60}


def test_tcvis_trends_flag_old_slumps_but_not_traps(region, truth, terrain, region_box):
    with rasterio.open(region.tcvis) as src:
        assert src.crs.to_string() == "EPSG:3413" and src.res == (30.0, 30.0) and src.count == 3
        assert src.dtypes[0] == "uint8"
        assert src.descriptions == ("tc_brightness", "tc_greenness", "tc_wetness")
        tc = np.zeros((3, *terrain["dem"].shape), np.float32)
        reproject(src.read(), tc, src_transform=src.transform, src_crs=src.crs, dst_transform=terrain["transform"],
                  dst_crs=UTM, resampling=Resampling.nearest)
    t2018 = truth[truth.year == 2018]
    old_rts = rasterize(t2018[t2018.kind == "rts"].geometry, tc.shape[1:], terrain["transform"])
    trap_geoms = t2018[t2018.kind.isin(["rock_outcrop", "road", "sediment_pond", "lake"])].geometry
    away_from_rts = region_box.difference(truth[truth.kind == "rts"].buffer(60).union_all())
    traps = rasterize(trap_geoms.intersection(away_from_rts), tc.shape[1:], terrain["transform"])
    brightness, greenness = tc[0][old_rts].mean(), tc[1][old_rts].mean()
    assert brightness > 140 and greenness < 112
    deviation = np.abs(tc[:, traps] - 127)
    assert deviation.mean() < 5 and np.percentile(deviation, 99) < 12


# ------------------------------------------------------------------------------- spectra and features


def ndvi(sr: np.ndarray) -> np.ndarray:
    nir, red = sr[3].astype(float), sr[2].astype(float)
    return (nir - red) / np.maximum(nir + red, 1)


def test_spectra_of_tundra_scars_and_water(region, truth):
    scene = next(s for s in region.scenes if s.year == 2022 and s.has_labels)
    sr, profile = read(sr_path(scene))
    index, refl = ndvi(sr), sr / 10000
    valid = (sr > 0).all(axis=0)
    year = truth[truth.year == 2022]
    anything = rasterize(year.geometry.buffer(15), index.shape, profile["transform"])
    scars = rasterize(year[year.kind == "rts"].geometry.buffer(-6), index.shape, profile["transform"])
    lakes = rasterize(year[year.kind == "lake"].geometry.buffer(-10), index.shape, profile["transform"])
    tundra = valid & ~anything
    assert np.mean((index[tundra] > 0.5) & (index[tundra] < 0.82)) > 0.9
    assert 0.2 < np.median(refl[3][tundra]) < 0.4 and 0.03 < np.median(refl[2][tundra]) < 0.08
    assert scars[valid].sum() > 1000
    assert np.mean((index[scars & valid] > -0.02) & (index[scars & valid] < 0.22)) > 0.85
    assert 0.08 < np.median(refl[2][scars & valid]) < 0.2
    assert lakes[valid].sum() > 1000
    assert np.mean(index[lakes & valid] < 0) > 0.97 and np.median(refl[3][lakes & valid]) < 0.03


def test_slumps_grow_upslope_on_steep_slopes_near_water(truth, terrain):
    rts = truth[truth.kind == "rts"]
    water = truth[(truth.year == 2023) & truth.kind.isin(["lake", "river"])].union_all()
    plateau_slope = np.nanmedian(terrain["slope"])
    assert 6 <= rts.feature_id.nunique() <= 10
    for fid, group in rts.groupby("feature_id"):
        history = group.sort_values("year")
        geoms, years = list(history.geometry), list(history.year)
        for prev, cur in zip(geoms, geoms[1:], strict=False):
            assert prev.difference(cur).area < 1.0, fid  # nested (vector truth: no rasterisation loss)
            added = cur.difference(prev)
            assert added.area > 50, fid
            assert mean_in(terrain, "dem", added) > mean_in(terrain, "dem", prev) + 2, fid
        final = geoms[-1]
        assert 60 <= np.sqrt(final.area) and max(final.bounds[2] - final.bounds[0],
                                                   final.bounds[3] - final.bounds[1]) <= 320, fid
        assert mean_in(terrain, "slope", final) > plateau_slope + 4, fid
        assert final.distance(water) < 10, fid  # the mud-flow lobe reaches the water
        assert years[0] in (2018, 2021)


def test_traps_look_bare_or_turbid_but_sit_where_slumps_cannot(truth, terrain):
    year = truth[truth.year == 2022]
    rts_slopes = [mean_in(terrain, "slope", g) for g in year[year.kind == "rts"].geometry]
    for geom in year[year.kind == "rock_outcrop"].geometry:
        assert mean_in(terrain, "slope", geom) < 6 and mean_in(terrain, "tpi", geom) > 1
    for geom in year[year.kind == "sediment_pond"].geometry:
        assert mean_in(terrain, "slope", geom) < 5 and mean_in(terrain, "tpi", geom) < -0.5
    road = year[year.kind == "road"].geometry.iloc[0]
    assert mean_in(terrain, "slope", road) < 5
    assert min(rts_slopes) > 6
    ald = year[year.kind == "ald"]
    assert len(ald) >= 2 and all(mean_in(terrain, "slope", g) > 12 for g in ald.geometry)


# ------------------------------------------------------------------------------------------ vectors


def test_training_labels_use_the_real_schema(region, truth, shared_data):
    labels = gpd.read_file(region.training_labels)
    real = gpd.read_file(next(shared_data.glob("labels/ML_training_labels/*006/TrainingLabel_*.gpkg")), rows=1)
    assert list(labels.columns) == list(real.columns) == REAL_LABEL_COLUMNS
    assert labels.crs.to_epsg() == 4326 and labels.is_valid.all()
    labelled = {s.item_id: s for s in region.scenes if s.has_labels}
    assert set(labels.image_id) == set(labelled)
    assert set(labels.target) == {"Retrogressive Thaw Slumps", "Active Layer Detachment Slides"}
    for item_id, group in labels.groupby("image_id"):
        scene = labelled[item_id]
        assert set(group.datasource) == {"PSScene" if scene.item_type == "PSScene" else "PSOrthotile"}
        assert (group.image_date == metadata(scene)["properties"]["acquired"][:10]).all()
        footprint = gpd.GeoSeries([shape(metadata(scene)["geometry"])], crs=4326).to_crs(UTM).iloc[0]
        assert group.to_crs(UTM).within(footprint.buffer(0.5)).all()
    assert labels.id.is_unique


def test_reference_datasets_and_regions(region, truth):
    polygons = gpd.read_file(region.reference_polygons)
    points = gpd.read_file(region.reference_points)
    regions = gpd.read_file(region.regions).set_index("region")
    assert polygons.crs.to_epsg() == 3413 and points.crs.to_epsg() == 4326
    assert {"id", "year", "region", "source"} <= set(polygons.columns)
    assert {"id", "year", "region"} <= set(points.columns)
    assert set(polygons.region) == {"West"} and set(points.region) == {"East"}
    assert set(polygons.year) == set(points.year) == {2018, 2021, 2022, 2023}
    west, east = regions.loc["West"].geometry, regions.loc["East"].geometry
    assert polygons.to_crs(4326).representative_point().within(west).all()
    assert points.within(east).all()
    assert len(polygons) + len(points) == (truth.kind == "rts").sum()


def test_truth_has_every_kind_every_year(truth):
    assert truth.crs.to_string() == UTM
    kinds = {"rts", "ald", "rock_outcrop", "sediment_pond", "road", "lake", "river"}
    assert set(truth.kind) == kinds
    for year in (2021, 2022, 2023):
        assert set(truth[truth.year == year].kind) == kinds
    assert truth.is_valid.all()


# ------------------------------------------------------------------------------------------ determinism


def raster_arrays(root: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(root).as_posix(): read(p)[0] for p in sorted(root.rglob("*.tif"))}


def vector_frames(root: Path) -> dict[str, gpd.GeoDataFrame]:
    return {p.relative_to(root).as_posix(): gpd.read_file(p) for p in sorted(root.rglob("*.gpkg"))}


def test_same_seed_same_content_rerun_idempotent_other_seed_differs(region, tmp_path):
    again = tmp_path / "again"
    synthesise_demo_region(again)
    rerun = synthesise_demo_region(again)  # over the existing root
    assert rerun == load_demo_region(again) and not list(again.rglob(".*"))  # no temp files left
    expected, actual = raster_arrays(region.root), raster_arrays(again)
    assert expected.keys() == actual.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(actual[name], array, err_msg=name)
    for name, frame in vector_frames(region.root).items():
        other = vector_frames(again)[name]
        assert frame.drop(columns="geometry").equals(other.drop(columns="geometry")), name
        assert frame.geometry.geom_equals_exact(other.geometry, tolerance=0).all(), name
    assert (again / "demo_region.json").read_text() == (region.root / "demo_region.json").read_text().replace(
        str(region.root), str(again))

    other_seed = synthesise_demo_region(tmp_path / "seed8", DemoRegionConfig(seed=8))
    differs = raster_arrays(other_seed.root)
    assert [s.item_id for s in other_seed.scenes] == [s.item_id for s in region.scenes]
    assert not np.array_equal(differs["aux/tcvis.tif"], expected["aux/tcvis.tif"])
    scene = sr_path(region.scenes[0]).relative_to(region.root).as_posix()
    assert not np.array_equal(differs[scene], expected[scene])
