"""Where the training labels are and which training preset runs (the demo's small one or the paper's)."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from darts_core.params import TrainingParams
from resources.storage import darts_home

LABELS_ENV = "DARTS_TRAINING_LABELS"
PRESET_ENV = "DARTS_TRAINING_PRESET"
PRESETS = {"demo": TrainingParams.demo, "paper": TrainingParams.paper}


def default_labels_path() -> str:
    return os.environ.get(LABELS_ENV) or str(darts_home() / "demo_region" / "labels" / "demo_training_labels.gpkg")


class TrainingSetup(ConfigurableResource):
    """Training labels (GeoPackage in the DARTS label schema, any CRS) and the training preset."""

    labels_path: str = Field(default_factory=default_labels_path, description="label polygons with image_id")
    validation_scene_ids: list[str] = Field(
        default_factory=list, description="fixed validation scenes; empty: the labelled scenes of the latest year"
    )
    preset: str = Field(
        default_factory=lambda: os.environ.get(PRESET_ENV, "demo"),
        description="demo (small patches, few epochs, CPU-friendly) or paper (1024 px patches, many epochs, GPU)",
    )

    def params(self) -> TrainingParams:
        if self.preset not in PRESETS:
            raise ValueError(f"training preset {self.preset!r} is not one of {sorted(PRESETS)}")
        return PRESETS[self.preset]()
