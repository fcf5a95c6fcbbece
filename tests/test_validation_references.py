"""Reference readers on the real reference datasets (ARTS, van der Sluijs Peel Plateau, digitisation experiment)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from darts_core.level2 import to_equal_area
from validation.references import (
    REFERENCE_COLUMNS,
    digitization_aoi,
    read_arts,
    read_digitization_experiment,
    read_references,
    read_van_der_sluijs_peel_plateau,
    reference_frame,
    years_of,
)

ARTS = Path("reference/ARTS/ARTS_v5.0.0.geojson")
PEEL = Path("reference/van_der_Sluijs_2022_PeelPlateau/MSI_2022_10_Sluijs2022_meta3.shp")
EXPERIMENT = Path("reference/digitization_experiment")


def assert_schema(frame: gpd.GeoDataFrame) -> None:
    assert tuple(frame.columns) == REFERENCE_COLUMNS
    assert frame.crs == "EPSG:4326"
    assert {str(dtype) for dtype in frame[["year", "year_first", "year_last"]].dtypes} == {"Int64"}
    assert frame["reference_id"].is_unique
    assert set(frame["geometry_kind"]) <= {"point", "polygon"}
    bounds = frame.geometry.bounds
    assert (bounds["maxx"] - bounds["minx"]).max() < 180.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-07-05,2020-08-20", (2020, 2020)),
        ("2011-01-01,2017-01-01", (2011, 2017)),
        ("2016-01-01", (2016, 2016)),
        ("20210821", (2021, 2021)),
        (2004, (2004, 2004)),
        (pd.Timestamp("2022-07-25"), (2022, 2022)),
        (None, (None, None)),
        (float("nan"), (None, None)),
        ("unknown", (None, None)),
    ],
)
def test_years_of_date_fields(value: object, expected: tuple) -> None:
    assert years_of(value) == expected


def test_arts_schema_regions_and_years(shared_data: Path) -> None:
    arts = read_arts(shared_data / ARTS)
    assert_schema(arts)
    assert len(arts) == 2276 and set(arts["geometry_kind"]) == {"polygon"}
    per_region = arts.groupby("region").size().to_dict()
    assert per_region == {
        "Banks Island and Victoria Island, Canada": 365,
        "Banks Island, Inuvik Region, Canada": 262,
        "Hot Weather Creek, Ellesmere, Canada": 162,
        "Northern Taymyr Peninsula in Siberia, Russia": 1487,
    }
    single_year = arts.dropna(subset=["year"]).groupby("region")["year"].unique().map(list).to_dict()
    assert single_year == {
        "Banks Island and Victoria Island, Canada": [2017],
        "Banks Island, Inuvik Region, Canada": [2020],
        "Hot Weather Creek, Ellesmere, Canada": [2020],
    }
    taymyr = arts[arts["region"].str.startswith("Northern Taymyr")]  # mapped on multi-year mosaics: no one year
    assert taymyr["year"].isna().all()
    assert set(zip(taymyr["year_first"], taymyr["year_last"], strict=True)) == {(2011, 2017), (2018, 2021)}


def test_arts_geometry_matches_its_published_centroids(shared_data: Path) -> None:
    raw = gpd.read_file(shared_data / ARTS)
    arts = read_arts(shared_data / ARTS)
    repeated = raw["UID"].duplicated().to_numpy()  # 43 Taymyr slumps delineated for two periods share a UID
    assert repeated.sum() == 43
    assert (arts["reference_id"].to_numpy()[~repeated] == raw["UID"].to_numpy()[~repeated]).all()
    assert (arts["reference_id"].to_numpy()[repeated] == raw["UID"].to_numpy()[repeated] + "#2").all()
    centroids = gpd.GeoSeries(shapely.centroid(to_equal_area(arts.geometry, "EPSG:6931")), crs="EPSG:6931")
    centroids = centroids.to_crs("EPSG:4326")
    assert np.allclose(centroids.y, raw["CentroidLat"].astype(float), atol=1e-3)
    assert np.allclose(centroids.x, raw["CentroidLon"].astype(float), atol=1e-3)


def test_van_der_sluijs_peel_plateau(shared_data: Path) -> None:
    peel = read_van_der_sluijs_peel_plateau(shared_data / PEEL)
    assert_schema(peel)
    assert len(peel) == 2661 and set(peel["region"]) == {"Peel Plateau"}
    assert peel.groupby("year").size().to_dict() == {2004: 789, 2011: 630, 2016: 1242}
    assert (peel["year"] == peel["year_first"]).all() and (peel["year"] == peel["year_last"]).all()
    raw_area = gpd.read_file(shared_data / PEEL)["Area"].to_numpy()
    area = shapely.area(to_equal_area(peel.geometry, "EPSG:6931"))
    assert np.median(np.abs(area / raw_area - 1)) < 0.02  # the published areas (m²), rounded


def test_digitization_experiment_per_expert(shared_data: Path) -> None:
    root = shared_data / EXPERIMENT
    peel, bykovsky = read_digitization_experiment(root, "Peel"), read_digitization_experiment(root, "Bykovsky")
    assert list(peel) == [f"#{number:02d}" for number in range(1, 13)]
    assert "#07" not in bykovsky and "#08" not in bykovsky and len(bykovsky) == 10
    for site, experts in (("Peel", peel), ("Bykovsky", bykovsky)):
        for expert, frame in experts.items():
            assert_schema(frame)
            assert set(frame["region"]) == {site} and set(frame["year"]) == {2021}
            utm = gpd.read_file(root / "02_UserResults" / expert / f"{site}_digitized.shp")
            area = shapely.area(to_equal_area(frame.geometry, "EPSG:6931"))
            assert np.allclose(area, utm.area, rtol=0.01)
        aoi = digitization_aoi(root, site).to_crs("EPSG:4326").union_all()
        assert all(frame.intersects(aoi).all() for frame in experts.values())
    assert len(peel["#05"]) == 15 and len(bykovsky["#04"]) == 1


def test_point_table_from_arts_centroids(shared_data: Path, tmp_path: Path) -> None:
    raw = gpd.read_file(shared_data / ARTS)
    table = raw[["UID", "RegionName", "BaseMapDate", "CentroidLon", "CentroidLat"]]
    table.to_csv(tmp_path / "arts_points.csv", index=False)
    points = read_references(
        tmp_path / "arts_points.csv",
        region_column="RegionName",
        date_column="BaseMapDate",
        id_column="UID",
        lon_column="CentroidLon",
        lat_column="CentroidLat",
    )
    assert_schema(points)
    assert points["dataset"].unique().tolist() == ["arts_points"]
    assert set(points["geometry_kind"]) == {"point"} and len(points) == 2276
    assert np.allclose(points.geometry.x, raw["CentroidLon"].astype(float))
    polygons = read_arts(shared_data / ARTS)
    for column in ("region", "year", "year_first", "year_last"):
        assert points[column].equals(polygons[column])


def test_one_region_name_for_a_whole_dataset_and_argument_checks(shared_data: Path) -> None:
    raw = gpd.read_file(shared_data / PEEL).head(5)
    named = reference_frame(raw, "peel", region="RM/PP")
    assert set(named["region"]) == {"RM/PP"} and named["reference_id"].tolist()[:2] == ["peel:0", "peel:1"]
    assert named["year"].isna().all()  # no date column named
    with pytest.raises(ValueError, match="exactly one"):
        reference_frame(raw, "peel")
    with pytest.raises(ValueError, match="exactly one"):
        reference_frame(raw, "peel", region_column="ReginNm", region="RM/PP")
    lines = raw.assign(geometry=raw.geometry.boundary)
    with pytest.raises(ValueError, match="points or polygons"):
        reference_frame(lines, "peel", region="RM/PP")


def test_polygon_across_the_antimeridian_is_split() -> None:
    polar = gpd.GeoSeries([shapely.Point(0.0, 2_400_000.0).buffer(5_000.0)], crs="EPSG:6931")  # lon 180°, ~68°N
    frame = reference_frame(gpd.GeoDataFrame({"year": [2021]}, geometry=polar), "chukotka", region="east")
    geometry = frame.geometry.iloc[0]
    assert geometry.geom_type == "MultiPolygon" and len(geometry.geoms) == 2
    west, east = sorted(geometry.geoms, key=lambda part: part.bounds[0])
    assert np.isclose(west.bounds[0], -180.0) and np.isclose(east.bounds[2], 180.0)
    assert np.isclose(shapely.area(to_equal_area(frame.geometry, "EPSG:6931"))[0], polar.area[0], rtol=1e-3)
