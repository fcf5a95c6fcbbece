"""``darts query "SQL"``: read-only SQL over the DARTS database, safe while a writer holds the file.

The database is opened read-only (spatial, H3 UDFs and ``area_km2`` loaded). DuckDB refuses that while another
process writes the file (or this process holds a read-write connection); the query is then answered from the
Parquet sources, the source of truth: an in-memory database where every SQL model is a *view* of its rendered
SQL over the files below the storage root (models whose sources are missing are left out and named). The
answer is the same data the tables would hold after rebuilding, computed on the fly. The same happens when the
database file does not exist yet. This is a convenience for the local user, not a sandbox: DuckDB can still read
and write files (COPY) from a read-only connection.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import duckdb

from darts_assets.sql_models import SQL_DIR, SQL_VARS, load_sql_models, set_variables
from resources.duckdb import is_lock_error, prepare_connection
from resources.storage import StorageRoot, darts_home

STORAGE_ROOT_ENV = "DARTS_STORAGE_ROOT"


def open_read_only(database: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection, or None when the file is missing or locked by a writer."""
    if not database.is_file():
        return None
    try:
        return duckdb.connect(str(database), read_only=True)
    except duckdb.ConnectionException:  # this process holds the file with another configuration
        return None
    except duckdb.IOException as error:
        if is_lock_error(error):
            return None
        raise


def parquet_views(storage: StorageRoot, sql_dir: Path = SQL_DIR) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory connection with one view per SQL model over the Parquet sources; the models left out."""
    con = prepare_connection(duckdb.connect())
    missing = []
    for model in load_sql_models(sql_dir, SQL_VARS):
        try:
            set_variables(con, model.variables(storage, SQL_VARS))
            con.execute(f'CREATE VIEW "{model.name}" AS\n{model.render()}')
        except (FileNotFoundError, duckdb.Error):
            missing.append(model.name)
    return con, missing


def render(relation: duckdb.DuckDBPyRelation | None, max_rows: int, max_width: int) -> str:
    """DuckDB's own box rendering of ``relation`` (``OK`` for statements without a result)."""
    if relation is None:
        return "OK"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        relation.show(max_rows=max_rows, max_width=max_width)
    return text.getvalue().rstrip("\n")


def run_query(
    sql: str,
    database: Path,
    *,
    root: str | None = None,
    sql_dir: Path = SQL_DIR,
    max_rows: int = 100,
    max_width: int = 200,
) -> str:
    """Run ``sql`` read-only on ``database`` and return a plain-text table.

    When the database is locked by a writer (or missing), answer from views over the Parquet sources below
    ``root`` (default ``$DARTS_STORAGE_ROOT``, else ``$DARTS_HOME``); a last line says so.
    """
    database = Path(database)
    con = open_read_only(database)
    note = ""
    if con is None:
        storage = StorageRoot(root=root or os.environ.get(STORAGE_ROOT_ENV) or str(darts_home()))
        con, missing = parquet_views(storage, sql_dir)
        state = "locked by a writer" if database.exists() else "missing"
        note = f"\n({database} is {state}: answered from the Parquet files below {storage.root}"
        note += f"; not available: {', '.join(missing)})" if missing else ")"
    else:
        prepare_connection(con)
    with contextlib.closing(con):
        return render(con.sql(sql), max_rows, max_width) + note
