"""The Dagster code location of DARTS."""

from dagster import Definitions

from darts_assets.checks import PRODUCT_CHECKS
from darts_assets.jobs import ALL_ASSETS, ALL_JOBS
from darts_assets.sensors import planet_scene_sensor, year_sensor
from resources.defaults import default_resources
from validation.assets import REFERENCE_ASSETS, VALIDATION_CHECKS

defs = Definitions(
    assets=[*ALL_ASSETS, *REFERENCE_ASSETS],
    asset_checks=[*PRODUCT_CHECKS, *VALIDATION_CHECKS],
    jobs=ALL_JOBS,
    sensors=[planet_scene_sensor, year_sensor],
    resources=default_resources(),
)
