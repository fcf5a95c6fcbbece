"""SQL models: each ``dbt_like_sql/<name>.sql`` file becomes a Dagster asset that builds the DuckDB table ``<name>``.

A model file is one SELECT (leading ``--`` lines are the asset description). Reference syntax, the only
``{{ ... }}`` expressions allowed (single or double quotes):

- ``{{ ref('model') }}``: another SQL model; renders to its table ``"model"``; dep on ``AssetKey('model')``.
- ``{{ source('name') }}``: Parquet written by another asset; renders to ``read_parquet(getvariable(...))``.
  Hive sources (``hive_partitioning``, column ``year`` from ``year=YYYY``; DuckDB prunes on it):
  ``level1`` = ``<root>/level1/year=*/*.parquet`` (asset ``level1_scene_features``) and ``footprints`` =
  ``<root>/footprints/year=*/*.parquet`` (asset ``planet_scene``). Product sources ``products/<kind>`` = the
  single file ``<root>/products/*_<what>_*_<level>.parquet`` for ``<kind>`` = ``<what>_<level>``, e.g.
  ``products/features_level1`` -> ``DARTS_features_2018-2023_level1.parquet`` (asset ``level1_product``); none or
  several matching files is an error (an old year range left behind would otherwise be counted twice).
- ``{{ var('name') }}``: a run-time value (``SQL_VARS``); renders to ``getvariable('name')``.

Paths and values never enter the SQL text: before running, each is bound with ``SET VARIABLE <name> = ?``
(a prepared parameter), so quotes in a storage root or a value cannot inject SQL, and the rendered SQL does not
depend on the root (``darts query`` reuses it for views over the Parquet files). Unknown references, names or
cycles raise :class:`SqlModelError` naming the file. Models are not partitioned: each run rebuilds its table with
``CREATE OR REPLACE TABLE`` in one transaction.
"""

import graphlib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import shapely
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    RetryRequested,
    TableColumn,
    TableSchema,
    asset,
)
from tabulate import tabulate

from darts_assets.database_metadata import MODEL_METADATA
from resources.duckdb import DartsDuckDB, is_lock_error, register_remote_filesystems
from resources.storage import StorageRoot

SQL_DIR = Path(__file__).resolve().parents[1] / "dbt_like_sql"
H3_RESOLUTION = 4  # paper Figure 9: H3 grid level 4
SQL_VARS: dict[str, object] = {"h3_resolution": H3_RESOLUTION}
PREVIEW_ROWS = 10
PREVIEW_WKT_CHARACTERS = 60
LOCK_RETRIES, LOCK_WAIT_S = 5, 30  # while another process (e.g. a long `darts query`) holds the database file

NAME = re.compile(r"[a-z_][a-z0-9_]*")
EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
CALL = re.compile(r"\s*(ref|source|var)\(\s*(['\"])([^'\"]+)\2\s*\)\s*")


class SqlModelError(ValueError):
    """A SQL model file that cannot be turned into an asset (the message names the file)."""


@dataclass(frozen=True)
class Source:
    """Parquet files below the storage root, written by ``asset_key``."""

    parts: tuple[str, ...]  # path components below the root; the last ones may be glob patterns
    asset_key: AssetKey
    hive: bool = False

    def render(self, variable: str) -> str:
        options = ", hive_partitioning = true, union_by_name = true" if self.hive else ""
        return f"read_parquet(getvariable('{variable}'){options})"

    def location(self, storage: StorageRoot) -> str:
        """The glob of a hive source; for a product, its one file (error when none or several match)."""
        if self.hive:
            return str(storage.path(*self.parts))
        folder, pattern = storage.path(*self.parts[:-1]), self.parts[-1]
        matches = sorted(str(path) for path in folder.glob(pattern)) if folder.exists() else []
        if len(matches) != 1:
            raise FileNotFoundError(f"expected one product file {folder}/{pattern}, found {matches or 'none'}")
        return matches[0]


PRODUCT_ASSETS = {
    "features_level1": "level1_product",
    "features_level2": "level2_product",
    "coverage_level1": "coverage_level1_product",
    "coverage_level2": "coverage_level2_product",
    "coverage_union": "coverage_union_product",
    "coverage_intersect": "coverage_intersect_product",
}


def product_source(kind: str, asset_name: str) -> Source:
    what, level = kind.split("_", 1)
    return Source(("products", f"*_{what}_*_{level}.parquet"), AssetKey(asset_name))


SOURCES: dict[str, Source] = {
    "level1": Source(("level1", "year=*", "*.parquet"), AssetKey("level1_scene_features"), hive=True),
    "footprints": Source(("footprints", "year=*", "*.parquet"), AssetKey("planet_scene"), hive=True),
    **{f"products/{kind}": product_source(kind, name) for kind, name in PRODUCT_ASSETS.items()},
}


def source_variable(name: str) -> str:
    return "source_" + re.sub(r"[^a-z0-9]", "_", name)


@dataclass(frozen=True)
class SqlModel:
    """One parsed model file: its template and the refs, sources and vars it uses."""

    name: str
    path: Path
    template: str
    refs: tuple[str, ...]
    sources: tuple[str, ...]
    vars: tuple[str, ...]

    @property
    def description(self) -> str:
        lines = []
        for line in self.template.lstrip().splitlines():
            if not line.startswith("--"):
                break
            lines.append(line.removeprefix("--").strip())
        return " ".join(lines) or f"DuckDB table {self.name} from {self.path.name}"

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    @property
    def deps(self) -> list[AssetKey]:
        return [AssetKey(ref) for ref in self.refs] + [SOURCES[source].asset_key for source in self.sources]

    def render(self) -> str:
        """The SELECT with every reference replaced (values stay DuckDB variables)."""

        def replace(match: re.Match) -> str:
            kind, _, name = CALL.fullmatch(match.group(1)).groups()
            if kind == "ref":
                return f'"{name}"'
            if kind == "source":
                return SOURCES[name].render(source_variable(name))
            return f"getvariable('{name}')"

        return EXPRESSION.sub(replace, self.template).strip().rstrip(";").rstrip()

    def variables(self, storage: StorageRoot, values: Mapping[str, object]) -> dict[str, object]:
        """The DuckDB variables the rendered SQL reads: source locations below ``storage`` and vars."""
        found = {source_variable(name): SOURCES[name].location(storage) for name in self.sources}
        return found | {name: values[name] for name in self.vars}


def parse_model(path: Path, models: Iterable[str], values: Mapping[str, object]) -> SqlModel:
    """Parse ``path``; every ref must name one of ``models``, every source ``SOURCES``, every var ``values``."""
    name, template = path.stem, path.read_text()
    if not NAME.fullmatch(name):
        raise SqlModelError(f"{path}: the model name {name!r} must match {NAME.pattern}")
    found: dict[str, list[str]] = {"ref": [], "source": [], "var": []}
    for expression in EXPRESSION.findall(template):
        call = CALL.fullmatch(expression)
        if call is None:
            raise SqlModelError(f"{path}: unsupported expression {{{{{expression}}}}}: use ref(), source() or var()")
        kind, _, target = call.groups()
        known = {"ref": set(models) - {name}, "source": SOURCES, "var": values}[kind]
        if target not in known:
            raise SqlModelError(f"{path}: unknown {kind} {target!r}; known: {sorted(known)}")
        if target not in found[kind]:
            found[kind].append(target)
    if "{{" in EXPRESSION.sub("", template):
        raise SqlModelError(f"{path}: unclosed '{{{{'")
    return SqlModel(name, path, template, tuple(found["ref"]), tuple(found["source"]), tuple(found["var"]))


def load_sql_models(folder: Path = SQL_DIR, values: Mapping[str, object] = SQL_VARS) -> list[SqlModel]:
    """All models of ``folder``, in dependency order."""
    paths = sorted(folder.glob("*.sql"))
    names = [path.stem for path in paths]
    models = {model.name: model for model in (parse_model(path, names, values) for path in paths)}
    try:
        order = graphlib.TopologicalSorter({name: model.refs for name, model in models.items()}).static_order()
        return [models[name] for name in order]
    except graphlib.CycleError as error:
        cycle = [str(models[name].path) for name in error.args[1]]
        raise SqlModelError(f"SQL models reference each other in a cycle: {' -> '.join(cycle)}") from error


def set_variables(con: duckdb.DuckDBPyConnection, values: Mapping[str, object]) -> None:
    """Bind each value as a DuckDB variable (names are checked identifiers, values prepared parameters).

    Remote source locations (``gs://``) become readable: their fsspec filesystem is registered on ``con``.
    """
    register_remote_filesystems(con, values.values())
    for name, value in values.items():
        if not NAME.fullmatch(name):
            raise SqlModelError(f"{name!r} is not a valid variable name")
        con.execute(f"SET VARIABLE {name} = ?", [value])


def preview_markdown(con: duckdb.DuckDBPyConnection, table: str, rows: int = PREVIEW_ROWS) -> str:
    """The first ``rows`` rows as a markdown table; geometries as WKT cut to 60 characters."""
    relation = con.table(table).limit(rows)
    geometry = [type_.id == "geometry" for type_ in relation.types]

    def cell(value: object, is_geometry: bool) -> object:
        if is_geometry and value is not None:
            return wkt_start(shapely.from_wkb(value), PREVIEW_WKT_CHARACTERS)
        return value

    data = [[cell(value, flag) for value, flag in zip(row, geometry, strict=True)] for row in relation.fetchall()]
    return tabulate(data, headers=relation.columns, tablefmt="github")


def wkt_start(geometry: shapely.Geometry, length: int) -> str:
    """``geometry.wkt[:length]`` without writing all of a large geometry (a year's coverage: 10^6 vertices, a
    second of WKT): a (multi)polygon's WKT begins with its first part's, a polygon's with its shell's."""
    if shapely.get_num_coordinates(geometry) <= length or shapely.has_z(geometry):
        return geometry.wkt[:length]
    if isinstance(geometry, shapely.LineString):  # LinearRing too: ``length`` coordinates fill ``length`` characters
        start = shapely.LineString(shapely.get_coordinates(geometry)[:length]).wkt
        return f"{geometry.geom_type.upper()} {start[start.index('(') :]}"[:length]
    if isinstance(geometry, shapely.MultiPolygon | shapely.Polygon):
        first = geometry.geoms[0] if isinstance(geometry, shapely.MultiPolygon) else geometry.exterior
        start = wkt_start(first, length + len("LINEARRING "))
        return f"{geometry.geom_type.upper()} ({start[start.index('(') :]}"[:length]
    return geometry.wkt[:length]


def build_table(con: duckdb.DuckDBPyConnection, model: SqlModel, values: Mapping[str, object]) -> dict:
    """``CREATE OR REPLACE TABLE`` the model in one transaction; its row count, schema and preview."""
    set_variables(con, values)
    con.begin()
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{model.name}" AS\n{model.render()}')
        rows = con.execute(f'SELECT count(*) FROM "{model.name}"').fetchone()[0]
        schema = con.execute(f'DESCRIBE "{model.name}"').fetchall()
        preview = preview_markdown(con, model.name)
        extra = MODEL_METADATA[model.name](con, model.name) if model.name in MODEL_METADATA else {}
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return {"rows": rows, "schema": [(column[0], column[1]) for column in schema], "preview": preview, "extra": extra}


def materialise_model(
    model: SqlModel, database: DartsDuckDB, storage: StorageRoot, values: Mapping[str, object]
) -> MaterializeResult:
    """Build the table; a database file held by another process asks Dagster to retry the step later."""
    variables = model.variables(storage, values)
    try:
        with database.connect() as con:
            built = build_table(con, model, variables)
    except duckdb.IOException as error:
        if is_lock_error(error):
            raise RetryRequested(max_retries=LOCK_RETRIES, seconds_to_wait=LOCK_WAIT_S) from error
        raise
    schema = TableSchema(columns=[TableColumn(name, type_) for name, type_ in built["schema"]])
    return MaterializeResult(
        metadata={
            "dagster/row_count": built["rows"],
            "dagster/column_schema": schema,
            "dagster/relation_identifier": f"{Path(database.database).stem}.main.{model.name}",
            "database": MetadataValue.path(database.database),
            "sql": MetadataValue.md(f"```sql\n{model.render()}\n```"),
            "variables": MetadataValue.json({name: str(value) for name, value in variables.items()}),
            "preview": MetadataValue.md(built["preview"]),
            **built["extra"],
        },
    )


def sql_model_asset(model: SqlModel, values: Mapping[str, object] = SQL_VARS) -> AssetsDefinition:
    """The asset (group ``database``, pool ``duckdb``) that builds ``model``'s table."""

    @asset(
        name=model.name,
        deps=model.deps,
        group_name="database",
        pool="duckdb",
        kinds={"duckdb", "sql"},
        description=model.description,
        code_version=model.code_version,
    )
    def _model(context: AssetExecutionContext, duckdb: DartsDuckDB, storage: StorageRoot) -> MaterializeResult:
        context.log.info(f"building {model.name} from {model.path}")
        return materialise_model(model, duckdb, storage, values)

    return _model


def sql_model_assets(folder: Path = SQL_DIR, values: Mapping[str, object] = SQL_VARS) -> list[AssetsDefinition]:
    """One asset per model file of ``folder``."""
    return [sql_model_asset(model, values) for model in load_sql_models(folder, values)]


SQL_MODEL_ASSETS = sql_model_assets()
