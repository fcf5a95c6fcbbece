"""The Dagster code location of DARTS."""

from dagster import Definitions

from darts_assets.jobs import ALL_ASSETS, ALL_JOBS
from darts_assets.sensors import planet_scene_sensor, year_sensor
from resources.defaults import default_resources

defs = Definitions(
    assets=ALL_ASSETS, jobs=ALL_JOBS, sensors=[planet_scene_sensor, year_sensor], resources=default_resources()
)
