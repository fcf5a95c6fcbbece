"""The Dagster code location of DARTS."""

from dagster import Definitions

from darts_assets.jobs import SCENE_ASSETS, scene_job
from darts_assets.sensors import planet_scene_sensor
from resources import default_resources

defs = Definitions(
    assets=[*SCENE_ASSETS],
    jobs=[scene_job],
    sensors=[planet_scene_sensor],
    resources=default_resources(),
)
