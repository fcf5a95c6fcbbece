"""Partition definitions of the DARTS asset graph and the scene -> year rule.

* scenes: one dynamic partition per Planet item id (added by the scene sensor);
* years: the annual products (Level 2, coverage, validation);
* model variants: ``tcvis`` (10 input bands) and ``notcvis`` (7 input bands).
"""

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from darts_core.scene_ids import scene_year

SCENE_PARTITIONS_NAME = "planet_scenes"
FIRST_YEAR = 2018
LAST_YEAR = 2026
MODEL_VARIANTS = ("tcvis", "notcvis")

scene_partitions = DynamicPartitionsDefinition(name=SCENE_PARTITIONS_NAME)
year_partitions = StaticPartitionsDefinition([str(year) for year in range(FIRST_YEAR, LAST_YEAR + 1)])
model_variant_partitions = StaticPartitionsDefinition(list(MODEL_VARIANTS))


def year_partition_of_scene(scene_partition_key: str) -> str:
    """The year partition a scene partition belongs to (the calendar year of acquisition)."""
    return str(scene_year(scene_partition_key))


def years_of_scenes(scene_partition_keys: list[str]) -> list[str]:
    """The year partitions that the given scene partitions touch, sorted."""
    return sorted({year_partition_of_scene(key) for key in scene_partition_keys})


__all__ = [
    "FIRST_YEAR",
    "LAST_YEAR",
    "MODEL_VARIANTS",
    "SCENE_PARTITIONS_NAME",
    "model_variant_partitions",
    "scene_partitions",
    "scene_year",
    "year_partition_of_scene",
    "year_partitions",
    "years_of_scenes",
]
