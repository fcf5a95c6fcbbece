"""Extra metadata of some SQL model assets: the Table-1 markdown of ``annual_statistics``, the H3 grid picture."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import geopandas as gpd
import shapely
from dagster import MetadataValue
from tabulate import tabulate

from darts_assets.metadata import png_markdown
from darts_assets.pictures import h3_grid_png
from darts_core.level1 import LONLAT_CRS
from darts_core.params import ProductParams

ModelMetadata = Callable[[duckdb.DuckDBPyConnection, str], dict[str, MetadataValue]]

TABLE1_HEADERS = (
    "Period",
    "L1 coverage (km²)",
    "L1 images",
    "L2 coverage (km²)",
    "L1 features (km²)",
    "L1 features",
    "L2 features (km²)",
    "L2 features",
)


def table1_markdown(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, MetadataValue]:
    """``annual_statistics`` laid out as Table 1 of the paper (blank where a row has no Level-1 value)."""
    rows = con.table(table).project(
        "period, l1_coverage_km2, l1_images, l2_coverage_km2, l1_features_km2, l1_features, l2_features_km2, "
        "l2_features"
    )
    data = [["" if value is None else value for value in row] for row in rows.fetchall()]
    text = tabulate(data, headers=TABLE1_HEADERS, tablefmt="github", floatfmt=".3f", intfmt=",")
    return {"table_1": MetadataValue.md(text)}


def h3_grid_picture(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, MetadataValue]:
    """The H3 cells of ``h3_affected_area`` coloured by the affected share, one panel per year."""
    frame = con.table(table).project("year, affected_pct, ST_AsWKB(geometry) AS wkb").df()
    geometry = shapely.from_wkb([bytes(value) for value in frame.pop("wkb")])
    cells = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometry, crs=LONLAT_CRS), crs=LONLAT_CRS)
    return {"h3_grid": png_markdown(h3_grid_png(cells, ProductParams()), "H3 affected area")}


MODEL_METADATA: dict[str, ModelMetadata] = {
    "annual_statistics": table1_markdown,
    "h3_affected_area": h3_grid_picture,
}
