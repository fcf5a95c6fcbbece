"""Validation assets (design stage 12): reference datasets as observable sources, training metrics from the
checkpoints, object-level validation of the Level-2 product (Table 4), false positives by land cover (Table 5).

Each result is also a DuckDB table of the asset's name (``training_metrics``, ``validation_metrics``,
``false_positive_landcover``), written in one transaction (pool ``duckdb``). ``validation_metrics`` also
evaluates the temporal-recurrence variant of Level 2 (``darts_core.recurrence``), so its rows show what the
filter does to precision and recall. The library code is in ``validation.objects``/``tables``/``landcover``.
"""

import hashlib
import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BetaWarning,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    observable_source_asset,
)
from tabulate import tabulate

from darts_assets.metadata import png_markdown
from darts_assets.pictures import curves_png, grouped_bars_png
from darts_assets.products import PRODUCTS_FOLDER, published_product
from darts_assets.training import MODELS_FOLDER, model_checkpoint
from darts_core.model import read_checkpoint
from darts_core.params import RecurrenceParams, ValidationParams, as_metadata
from darts_core.recurrence import filter_recurrent
from partitions import MODEL_VARIANTS
from resources.duckdb import DartsDuckDB
from resources.storage import StorageRoot
from resources.validation import ValidationSetup, default_references
from validation.landcover import land_cover_breakdown, land_cover_markdown
from validation.objects import evaluate_objects, false_positive_detections
from validation.references import read_references
from validation.tables import table4, table4_markdown

VALIDATION_FOLDER = "validation"
FALSE_POSITIVES_FILE = "false_positives.parquet"
LEVEL2_VARIANTS = ("all", "recurrent")  # Level 2 as published, and with the temporal-recurrence filter


# --- reference datasets ----------------------------------------------------------------------------------


def file_version(path: Path) -> str:
    """A content hash of a reference file (its data version: changes when the file does)."""
    if not path.is_file():
        raise FileNotFoundError(f"reference dataset {path} does not exist (configure ValidationSetup.references)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def reference_source(name: str):
    """The observable source asset of the configured reference dataset ``name``."""

    @observable_source_asset(
        name=name,
        group_name="validation",
        description=f"Reference dataset '{name}' (ValidationSetup.references['{name}']), observed by content hash.",
    )
    def _reference(validation: ValidationSetup) -> DataVersion:
        return DataVersion(file_version(Path(validation.references[name].path)))

    return _reference


with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13: nothing to act on
    warnings.simplefilter("ignore", BetaWarning)
    REFERENCE_ASSETS = [reference_source(name) for name in default_references()]


def read_all_references(validation: ValidationSetup) -> gpd.GeoDataFrame:
    frames = [
        read_references(
            Path(dataset.path),
            dataset=name,
            region_column=dataset.region_column if dataset.region is None else None,
            region=dataset.region,
            date_column=dataset.date_column,
            id_column=dataset.id_column,
        )
        for name, dataset in validation.references.items()
    ]
    return pd.concat(frames, ignore_index=True)


def read_regions(validation: ValidationSetup) -> gpd.GeoDataFrame | None:
    return gpd.read_file(validation.regions_path) if validation.regions_path else None


def read_product(storage: StorageRoot, kind: str) -> gpd.GeoDataFrame:
    name, _ = published_product(storage, kind)
    with storage.local_input(PRODUCTS_FOLDER, f"{name}.parquet") as path:
        return gpd.read_parquet(path)


# --- training metrics ------------------------------------------------------------------------------------


def checkpoint_metrics(storage: StorageRoot) -> pd.DataFrame:
    """Per variant and epoch, the validation pixel metrics stored in the checkpoint; ``best`` = kept weights."""
    frames = []
    for variant in MODEL_VARIANTS:
        with storage.local_input(MODELS_FOLDER, f"{variant}.pt") as path:
            config = read_checkpoint(path).config
        history = pd.DataFrame(config["metrics"])
        best = history.sort_values(["f1", "val_loss", "epoch"], ascending=[False, True, True]).iloc[0]["epoch"]
        frames.append(history.assign(model_variant=variant, best=history["epoch"] == best))
    columns = ["model_variant", "epoch", "best"]
    table = pd.concat(frames, ignore_index=True)
    return table[columns + [column for column in table.columns if column not in columns]]


@asset(
    deps=[AssetDep(model_checkpoint, partition_mapping=AllPartitionMapping())],
    group_name="validation",
    pool="duckdb",
    kinds={"duckdb"},
    description="Training-time pixel metrics (precision, recall, F1, IoU on the validation scenes) of every "
    "model variant and epoch, from the checkpoints. DuckDB table training_metrics.",
)
def training_metrics(context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB) -> MaterializeResult:
    table = checkpoint_metrics(storage)
    rows = duckdb.replace_table("training_metrics", table)
    best = table[table["best"]][["model_variant", "epoch", "precision", "recall", "f1", "iou", "val_loss"]]
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "best_epochs": MetadataValue.md(tabulate(best, headers="keys", tablefmt="github", showindex=False)),
            "f1_per_epoch": png_markdown(
                curves_png(table, "epoch", "f1", "model_variant", "Validation pixel F1 per epoch"), "F1 per epoch"
            ),
        }
    )


# --- object-level validation -----------------------------------------------------------------------------


def evaluate_variants(
    level2: gpd.GeoDataFrame,
    coverage: gpd.GeoDataFrame,
    references: gpd.GeoDataFrame,
    regions: gpd.GeoDataFrame | None,
    params: ValidationParams,
) -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    """Scores per region and year of each Level-2 variant (``validation_set``) and the false positives of 'all'."""
    detections = {"all": level2, "recurrent": filter_recurrent(level2, RecurrenceParams(), coverage)}
    scores, false_positives = [], None
    for variant in LEVEL2_VARIANTS:
        evaluation = evaluate_objects(detections[variant], references, coverage, regions, params=params)
        scores.append(evaluation.scores.assign(validation_set=variant))
        if variant == "all":
            false_positives = false_positive_detections(evaluation, detections[variant])
    return pd.concat(scores, ignore_index=True), false_positives


def recurrence_effect(table: pd.DataFrame) -> str:
    """One line per region: how the recurrence filter changes mean precision and recall."""
    indexed = table.set_index(["validation_set", "region"])
    lines = []
    for region in sorted(table["region"].unique()):
        before, after = indexed.loc[("all", region)], indexed.loc[("recurrent", region)]
        lines.append(
            f"- {region}: precision {before['precision_mean']:.3f} -> {after['precision_mean']:.3f}, "
            f"recall {before['recall_mean']:.3f} -> {after['recall_mean']:.3f}"
        )
    return "\n".join(lines)


@asset(
    deps=[
        AssetKey("level2_product"),
        AssetKey("coverage_level2_product"),
        *[reference.key for reference in REFERENCE_ASSETS],
        training_metrics,
    ],
    group_name="validation",
    pool="duckdb",
    kinds={"duckdb"},
    description="Object-level validation of the Level-2 product against the reference datasets, per region: "
    "precision, recall, F1 as mean ± sd over years, TP/FP/FN (paper Table 4), for Level 2 as published ('all') "
    "and with the temporal-recurrence filter ('recurrent'). DuckDB tables validation_metrics and "
    "validation_scores (per region and year).",
)
def validation_metrics(
    context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB, validation: ValidationSetup
) -> MaterializeResult:
    params = ValidationParams()
    level2, coverage = read_product(storage, "features_level2"), read_product(storage, "coverage_level2")
    scores, false_positives = evaluate_variants(
        level2, coverage, read_all_references(validation), read_regions(validation), params
    )
    table = table4(scores, params)
    duckdb.replace_table("validation_metrics", table)
    duckdb.replace_table("validation_scores", scores)
    with storage.atomic_output(VALIDATION_FOLDER, FALSE_POSITIVES_FILE) as local:
        false_positives.to_parquet(local, index=False, schema_version="1.1.0", write_covering_bbox=True)
    published = table[table["validation_set"] == "all"]
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "table_4": MetadataValue.md(table4_markdown(table)),
            "recurrence_filter": MetadataValue.md(recurrence_effect(table)),
            "scores": png_markdown(
                grouped_bars_png(
                    published,
                    "region",
                    ["precision_mean", "recall_mean", "f1_mean"],
                    "Object-level scores of Level 2 (mean over years)",
                    "score",
                ),
                "object-level scores",
            ),
            "references": MetadataValue.json({name: ref.path for name, ref in validation.references.items()}),
            "model_versions": MetadataValue.json(sorted(level2["DARTS_AI_model_version"].astype(str).unique())),
            "false_positives": len(false_positives),
            "parameters": MetadataValue.json(as_metadata(params)),
        }
    )


@asset_check(
    asset=validation_metrics,
    blocking=True,
    description="Mean precision and recall of Level 2 per "
    "region are at least the configured floors (ValidationSetup.floors); blocks the products catalogue.",
)
def validation_floors(duckdb: DartsDuckDB, validation: ValidationSetup) -> AssetCheckResult:
    with duckdb.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT region, precision_mean, recall_mean FROM validation_metrics WHERE validation_set = 'all'"
        ).fetchall()
    failures = {
        region: {"precision": precision, "recall": recall}
        for region, precision, recall in rows
        if precision < validation.floor(region).precision or recall < validation.floor(region).recall
    }
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        metadata={"below_floor": MetadataValue.json(failures), "regions": len(rows)},
    )


@asset(
    deps=[validation_metrics],
    group_name="validation",
    pool="duckdb",
    kinds={"duckdb"},
    description="False positives of the Level-2 validation by majority land-cover class (paper Table 5). "
    "DuckDB table false_positive_landcover.",
)
def false_positive_landcover(
    context: AssetExecutionContext, storage: StorageRoot, duckdb: DartsDuckDB, validation: ValidationSetup
) -> MaterializeResult:
    with storage.local_input(VALIDATION_FOLDER, FALSE_POSITIVES_FILE) as path:
        false_positives = gpd.read_parquet(path)
    table = land_cover_breakdown(false_positives, Path(validation.landcover_path)).astype({"land_cover": "string"})
    duckdb.replace_table("false_positive_landcover", pd.DataFrame(table))
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "false_positives": len(false_positives),
            "table_5": MetadataValue.md(land_cover_markdown(table)),
            "classes": png_markdown(
                grouped_bars_png(table, "land_cover", ["fraction_percent"], "False positives by land cover", "%"),
                "false positives by land cover",
            ),
            "landcover": MetadataValue.path(validation.landcover_path),
        }
    )


VALIDATION_ASSETS = [training_metrics, validation_metrics, false_positive_landcover]
VALIDATION_CHECKS = [validation_floors]
