"""Jobs: one per partitioning of the graph."""

from dagster import AssetSelection, define_asset_job

from darts_assets.scene_inputs import SCENE_INPUT_ASSETS
from darts_assets.scenes import planet_scene_item

SCENE_ASSETS = [planet_scene_item, *SCENE_INPUT_ASSETS]

scene_job = define_asset_job(
    "scene_job",
    selection=AssetSelection.assets(*SCENE_ASSETS),
    description="The per-scene chain for one Planet scene partition.",
)
