"""Jobs: one per partitioning of the graph (scene, year, model variant) and one per unpartitioned stage."""

from dagster import AssetSelection, define_asset_job

from darts_assets.annual import ANNUAL_ASSETS
from darts_assets.predictions import PREDICTION_ASSETS
from darts_assets.products import PRODUCT_ASSETS
from darts_assets.scene_inputs import SCENE_INPUT_ASSETS
from darts_assets.scenes import planet_scene_item
from darts_assets.sql_models import SQL_MODEL_ASSETS
from darts_assets.training import model_checkpoint, training_data
from validation.assets import VALIDATION_ASSETS

SCENE_ASSETS = [planet_scene_item, *SCENE_INPUT_ASSETS, *PREDICTION_ASSETS]
DATABASE_ASSETS = [*PRODUCT_ASSETS, *SQL_MODEL_ASSETS, *VALIDATION_ASSETS]

scene_job = define_asset_job(
    "scene_job",
    selection=AssetSelection.assets(*SCENE_ASSETS),
    description="The per-scene chain for one Planet scene partition: inputs, predictions, Level-1 features.",
)
training_data_job = define_asset_job(
    "training_data_job", selection=AssetSelection.assets(training_data), description="Cut the training patches."
)
model_job = define_asset_job(
    "model_job", selection=AssetSelection.assets(model_checkpoint), description="Train one model variant."
)
year_job = define_asset_job(
    "year_job",
    selection=AssetSelection.assets(*ANNUAL_ASSETS),
    description="The products of one year: Level-2 features and coverage.",
)
database_job = define_asset_job(
    "database_job",
    selection=AssetSelection.assets(*DATABASE_ASSETS),
    description="The product files, their STAC catalogue, the DuckDB relations (statistics, H3 grid) and the "
    "validation.",
)

ALL_JOBS = [scene_job, training_data_job, model_job, year_job, database_job]
ALL_ASSETS = [*SCENE_ASSETS, training_data, model_checkpoint, *ANNUAL_ASSETS, *DATABASE_ASSETS]
