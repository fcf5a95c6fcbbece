"""The DuckDB database of DARTS: ``$DARTS_HOME/darts.duckdb`` with spatial, H3 UDFs and an area macro.

Every connection (``DartsDuckDB.connect`` or :func:`prepare_connection` on any connection) gets:

- the ``spatial`` extension, loaded offline from the ``duckdb-extension-spatial`` wheel (same version as
  duckdb); only when the wheel's file is missing does it fall back to ``INSTALL spatial; LOAD spatial``,
  which needs network access to extensions.duckdb.org.
- Python UDFs over the ``h3`` package (the H3 community extension cannot be downloaded offline):
  ``h3_cell(lat DOUBLE, lon DOUBLE, res INTEGER) -> VARCHAR``,
  ``h3_cell_area_km2(cell VARCHAR) -> DOUBLE`` (the cell's area on the authalic sphere),
  ``h3_cell_boundary_wkb(cell VARCHAR) -> BLOB`` (lon/lat polygon as WKB, split at ±180°: wrap it in
  ``ST_GeomFromWKB``) and ``h3_candidate_cells(wkb BLOB, res INTEGER) -> VARCHAR[]``: a superset of the cells
  whose boundary polygon intersects the lon/lat geometry ``ST_AsWKB(geom)``. H3 draws polygon edges as great
  circles, DuckDB and GeoParquet as straight lon/lat lines (hundreds of metres apart along a 50 km edge), so
  the geometry is simplified by 1 % of a cell's edge and segmentized to 0.1° first and H3's "overlap" set
  widened by one ring of neighbours; callers keep the cells that really intersect.
- ``polygon_union(wkbs BLOB[]) -> BLOB``: the union of a list of polygonal geometries, as ``ST_Union_Agg`` gives
  it but computed per group of intersecting polygons in shapely (``list(ST_AsWKB(geom))`` in, ``ST_GeomFromWKB``
  around it): ``ST_Union_Agg`` over the 74,000 Level-2 features of DARTS v1 took minutes.
- a temporary macro ``area_km2(geom)``: ``ST_Area(ST_Transform(geom, 'EPSG:4326', 'EPSG:6931',
  always_xy := true)) / 1e6``, the one area definition the SQL models use.

DuckDB lets one process write a database file; while it holds the file, other processes cannot open it at
all, and an open read-only connection blocks writers (check with :func:`is_lock_error`). Writers are serialised
by the Dagster pool ``duckdb`` (limit 1) and retry later when a reader holds the file; readers that must not fail
(``darts query``) fall back to the Parquet sources (see ``darts_assets.query``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from dagster import ConfigurableResource
from duckdb.sqltypes import BLOB, DOUBLE, INTEGER, VARCHAR
from fsspec.core import split_protocol
from pydantic import Field

from darts_core.level1 import LONLAT_CRS, polygonal_parts, split_antimeridian
from darts_core.level2 import clipped_intersection, union_of_groups
from darts_core.params import ProductParams
from darts_core.threads import in_chunks
from resources.storage import darts_home, remote_filesystem

DATABASE_FILE = "darts.duckdb"
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
KM_PER_DEGREE_LATITUDE = 111.7  # at most (110.6 km at the equator): extents and tolerances from it err safe


def spatial_extension_path() -> Path | None:
    """The spatial extension file shipped by the ``duckdb-extension-spatial`` wheel, if installed."""
    try:
        import duckdb_extension_spatial
    except ImportError:
        return None
    path = Path(duckdb_extension_spatial.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = path / "spatial.duckdb_extension"
    return path if path.is_file() else None


def load_spatial(con: duckdb.DuckDBPyConnection) -> None:
    """Load spatial from the wheel; without the wheel's file, INSTALL (online) and LOAD it by name."""
    path = spatial_extension_path()
    if path is None:
        con.install_extension("spatial")
        con.load_extension("spatial")
    else:
        con.load_extension(str(path))


def is_lock_error(error: BaseException) -> bool:
    """Whether ``error`` says that another process holds the database file."""
    return isinstance(error, duckdb.IOException) and "could not set lock" in str(error).lower()


def h3_cell(lat: float, lon: float, res: int) -> str:
    return h3.latlng_to_cell(lat, lon, res)


def h3_cell_area_km2(cell: str) -> float:
    return h3.cell_area(cell, unit="km^2")


def h3_cell_boundary_wkb(cell: str) -> bytes:
    polygon = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
    return shapely.to_wkb(split_antimeridian(polygon))


def h3_candidate_cells(wkb: bytes, res: int) -> list[str]:
    geometry = shapely.from_wkb(wkb)
    if _within_quarter_edge(geometry, res):  # a slump: the cells around one of its points (no polygon fill)
        lon, lat = shapely.get_coordinates(geometry)[0]
        return sorted(h3.grid_disk(h3.latlng_to_cell(lat, lon, res), 2))
    shape = h3.geo_to_h3shape(shapely.segmentize(h3_outline(geometry, res), 0.1))
    overlapping = h3.h3shape_to_cells_experimental(shape, res, contain="overlap")
    return sorted({ring_cell for cell in overlapping for ring_cell in h3.grid_disk(cell, 1)})


def _within_quarter_edge(geometry: shapely.Geometry, res: int) -> bool:
    """Whether all of ``geometry`` lies within a quarter of an average H3 edge at ``res`` of its first point.

    Two cells that are not neighbours are at least an edge apart, so every point of such a geometry lies in the
    cell of that first point or a neighbour, and every cell polygon it meets (straight lon/lat edges, a few
    hundred metres off H3's great circles) is within two rings of that cell.
    """
    if geometry.is_empty:
        return False
    west, south, east, north = geometry.bounds
    widest = np.cos(np.radians(min(abs(south), abs(north)))) if south * north > 0 else 1.0
    extent_km = KM_PER_DEGREE_LATITUDE * np.hypot(north - south, (east - west) * widest)
    return bool(extent_km < 0.25 * h3.average_hexagon_edge_length(res, unit="km"))


def h3_outline(geometry: shapely.Geometry, res: int) -> shapely.Geometry:
    """``geometry`` simplified by 1 % of an H3 edge at ``res`` (the ring of neighbours added to the candidates
    covers far more), parts that vanish kept whole: H3 reads 30x fewer vertices of a yearly coverage (4.4 M)."""
    tolerance = 0.01 * h3.average_hexagon_edge_length(res, unit="km") / KM_PER_DEGREE_LATITUDE
    parts = np.array(polygonal_parts(geometry), dtype=object)
    if len(parts) == 0:
        return geometry
    simplified = shapely.simplify(parts, tolerance, preserve_topology=False)
    kept = shapely.is_empty(simplified) | ~shapely.is_valid(simplified)
    simplified[kept] = parts[kept]
    return shapely.MultiPolygon(polygonal_parts(simplified))


def polygon_union_wkb(wkbs: list[bytes]) -> bytes:
    """WKB of the union of polygonal WKB geometries: ``ST_Union_Agg`` over a list, computed per group of
    intersecting polygons (``darts_core.level2.union_of_groups``), several times faster over the Level-2 features."""
    return shapely.to_wkb(union_of_groups(shapely.from_wkb(wkbs)))


def polygon_pieces_wkb(geometries: pa.Array, others: pa.ListArray) -> pa.ListArray:
    """Per row, WKB of the intersection of ``geometries`` (WKB) with each of its list of ``others`` (WKB) (an arrow
    UDF: one call per chunk of rows, so a large geometry is parsed once for all its pieces), the geometry cut to
    each other one's box first (``darts_core.level2.clipped_intersection``), on all cores."""
    geometries, others = _combined(geometries), _combined(others)
    shapes = shapely.from_wkb(geometries.to_numpy(zero_copy_only=False))
    flat = shapely.from_wkb(pc.list_flatten(others).to_numpy(zero_copy_only=False))
    lengths = pc.fill_null(pc.list_value_length(others), 0).to_numpy()
    owners = shapes[np.repeat(np.arange(len(shapes)), lengths)]  # as list_flatten: nothing from NULL lists
    pieces = pa.array(shapely.to_wkb(in_chunks(clipped_intersection, flat, owners)), type=pa.binary())
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pieces, mask=others.is_null())


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def register_h3(con: duckdb.DuckDBPyConnection) -> None:
    """The H3 UDFs (pure functions: DuckDB may cache and reorder them; NULL in gives NULL out)."""
    con.create_function("h3_cell", h3_cell, [DOUBLE, DOUBLE, INTEGER], VARCHAR)
    con.create_function("h3_cell_area_km2", h3_cell_area_km2, [VARCHAR], DOUBLE)
    con.create_function("h3_cell_boundary_wkb", h3_cell_boundary_wkb, [VARCHAR], BLOB)
    con.create_function("h3_candidate_cells", h3_candidate_cells, [BLOB, INTEGER], duckdb.list_type(VARCHAR))


def register_union(con: duckdb.DuckDBPyConnection) -> None:
    """``polygon_union(wkbs BLOB[]) -> BLOB``: the union of a list of polygonal WKB geometries;
    ``polygon_pieces(geometry BLOB, others BLOB[]) -> BLOB[]``: its intersection with each of ``others``."""
    con.create_function("polygon_union", polygon_union_wkb, [duckdb.list_type(BLOB)], BLOB)
    con.create_function(
        "polygon_pieces", polygon_pieces_wkb, [BLOB, duckdb.list_type(BLOB)], duckdb.list_type(BLOB), type="arrow"
    )


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled); only for constants of the code, never for user data."""
    if "\x00" in value:
        raise ValueError(f"{value!r} contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded quotes doubled): column names read from files cannot inject SQL."""
    if "\x00" in name:
        raise ValueError(f"{name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def register_macros(con: duckdb.DuckDBPyConnection, equal_area_crs: str = ProductParams().equal_area_crs) -> None:
    """``area_km2(geom)``: km² of a lon/lat geometry in the equal-area CRS (a TEMP macro: read-only safe)."""
    source, target = sql_literal(LONLAT_CRS), sql_literal(equal_area_crs)
    con.execute(
        "CREATE OR REPLACE TEMP MACRO area_km2(geom) AS "
        f"ST_Area(ST_Transform(geom, {source}, {target}, always_xy := true)) / 1e6"
    )


def prepare_connection(con: duckdb.DuckDBPyConnection, threads: int = 0) -> duckdb.DuckDBPyConnection:
    """Spatial, H3 UDFs, ``area_km2`` and (``threads`` > 0) the thread count, on an open connection."""
    if threads > 0:
        con.execute(f"SET threads = {int(threads)}")
    load_spatial(con)
    register_h3(con)
    register_union(con)
    register_macros(con)
    return con


def register_remote_filesystems(con: duckdb.DuckDBPyConnection, locations: Iterable[object]) -> None:
    """Let DuckDB read the remote (e.g. ``gs://``) paths among ``locations`` through fsspec.

    The filesystems are configured like the storage root's (from the environment); DuckDB's own httpfs extension
    is not needed (it cannot be downloaded offline). Non-string values and local paths are ignored.
    """
    paths = [location for location in locations if isinstance(location, str)]
    for protocol in sorted({split_protocol(path)[0] for path in paths} - {None, "file", "local"}):
        filesystem = remote_filesystem(protocol)
        protocols = filesystem.protocol
        name = protocols if isinstance(protocols, str) else protocols[0]  # the name DuckDB registers it under
        if not con.filesystem_is_registered(name):
            con.register_filesystem(filesystem)


def read_geoparquet(con: duckdb.DuckDBPyConnection, files: str | list[str]) -> gpd.GeoDataFrame:
    """GeoParquet ``files`` (paths or globs, bound as a parameter; local or remote) as one EPSG:4326 GeoDataFrame.

    Columns are unified by name; the GeoParquet ``bbox`` covering column is dropped (it is rewritten on output).
    """
    register_remote_filesystems(con, [files] if isinstance(files, str) else files)
    relation = con.sql("SELECT * FROM read_parquet($files, union_by_name = true)", params={"files": files})
    columns = [column for column in relation.columns if column not in ("geometry", "bbox")]
    selected = ", ".join([*(sql_identifier(column) for column in columns), "ST_AsWKB(geometry) AS geometry_wkb"])
    frame = con.sql(f"SELECT {selected} FROM read_parquet($files, union_by_name = true)", params={"files": files}).df()
    wkb = [bytes(value) for value in frame.pop("geometry_wkb")]
    geometry = gpd.GeoSeries(shapely.from_wkb(wkb), index=frame.index, crs=LONLAT_CRS)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=LONLAT_CRS)


class DartsDuckDB(ConfigurableResource):
    """The DARTS DuckDB database file. One writer at a time: assets that write use the pool ``duckdb``."""

    database: str = Field(
        default_factory=lambda: str(darts_home() / DATABASE_FILE),
        description="Path of the database file. Default: $DARTS_HOME/darts.duckdb.",
    )
    threads: int = Field(default=0, description="DuckDB worker threads; 0 keeps DuckDB's default (all cores).")

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """An open, prepared connection, closed on exit. ``read_only`` fails while another process writes."""
        if not read_only:
            os.makedirs(Path(self.database).parent, exist_ok=True)
        con = duckdb.connect(self.database, read_only=read_only)
        try:
            yield prepare_connection(con, self.threads)
        finally:
            con.close()

    def replace_table(self, name: str, frame: pd.DataFrame) -> int:
        """``CREATE OR REPLACE TABLE name`` from a (non-spatial) DataFrame in one transaction; returns its rows."""
        if not TABLE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain table name")
        with self.connect() as con:
            con.register("incoming_frame", frame)
            con.begin()
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming_frame')
            con.commit()
            return con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]

    def read_geoparquet(self, files: str | list[str]) -> gpd.GeoDataFrame:
        """GeoParquet files (EPSG:4326) read by an in-memory DuckDB (the database file is not opened)."""
        with duckdb.connect() as con:
            return read_geoparquet(prepare_connection(con, self.threads), files)
