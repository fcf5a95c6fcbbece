"""Where the reference datasets and the land-cover raster of the validation are, and the score floors.

Reference datasets are configured as lists of ``ReferenceDataset`` (any vector format GeoPandas reads, any CRS;
points are buffered by ``ValidationParams.point_buffer_m``). Default: the demo region's polygon (region West)
and point (region East) references and its validation regions.
"""

from __future__ import annotations

import os

from dagster import Config, ConfigurableResource
from pydantic import Field

from resources.aux_sources import default_aux_path
from resources.storage import darts_home

REFERENCE_DIR_ENV = "DARTS_REFERENCE_DIR"


def default_reference_path(name: str) -> str:
    folder = os.environ.get(REFERENCE_DIR_ENV) or str(darts_home() / "demo_region" / "reference")
    return os.path.join(folder, name)


class ReferenceDataset(Config):
    """One reference dataset file and how to read its region, year and id."""

    path: str
    region_column: str | None = Field(default="region", description="column naming each feature's region")
    region: str | None = Field(default=None, description="one region name for the whole dataset (no column)")
    date_column: str | None = Field(default="year", description="date, year or 'YYYY-MM-DD,YYYY-MM-DD' range")
    id_column: str | None = Field(default="id", description="the dataset's feature id (default: row number)")


class ScoreFloor(Config):
    """Minimum object-level precision and recall (mean over years) of a region."""

    precision: float = 0.5
    recall: float = 0.5


def default_references() -> dict[str, ReferenceDataset]:
    return {
        "reference_polygons": ReferenceDataset(path=default_reference_path("demo_reference_polygons.gpkg")),
        "reference_points": ReferenceDataset(path=default_reference_path("demo_reference_points.gpkg")),
    }


class ValidationSetup(ConfigurableResource):
    """Reference datasets (by asset name), validation regions, land-cover raster and per-region score floors."""

    references: dict[str, ReferenceDataset] = Field(default_factory=default_references)
    regions_path: str = Field(
        default_factory=lambda: default_reference_path("demo_regions.gpkg"),
        description="polygons with a 'region' column; empty: the convex hull of each region's references",
    )
    landcover_path: str = Field(default_factory=lambda: default_aux_path("landcover.tif"))
    floors: dict[str, ScoreFloor] = Field(
        default_factory=lambda: {"*": ScoreFloor()},
        description="per region ('*': any region without its own entry): blocking precision/recall floors",
    )

    def floor(self, region: str) -> ScoreFloor:
        return self.floors.get(region) or self.floors.get("*") or ScoreFloor(precision=0.0, recall=0.0)
