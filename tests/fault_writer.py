"""A scene's outputs written through the project's atomic writers, for the SIGKILL case of test_faults.

Run as ``python -m tests.fault_writer ROOT SCENE_ID PAUSE_AT``: the process stops just before it would publish
the file named ``PAUSE_AT`` (its bytes are in the temporary file), prints ``paused <temp path>`` and waits to be
killed. Light imports only (no torch), so the process starts quickly.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import geopandas as gpd

from darts_assets.scene_inputs import FOOTPRINTS_FOLDER, ingest_planet_scene
from darts_core.products import write_product
from resources.storage import StorageRoot

PRODUCT_NAME = "DARTS_coverage_2018-2018_level1"


def write_scene_outputs(root: Path, scene_id: str) -> None:
    """The scene's valid mask (raster) and footprint (hive GeoParquet), then a product made of the footprint."""
    ingest_planet_scene(StorageRoot(root=str(root)), scene_id)
    footprint = gpd.read_parquet(next((root / FOOTPRINTS_FOLDER).glob(f"year=*/{scene_id}.parquet")))
    write_product(footprint, root / "products", PRODUCT_NAME)


def pause_before_publishing(file_name: str) -> None:
    """Make ``os.replace`` onto a file called ``file_name`` announce itself and block forever."""
    publish = os.replace

    def paused_replace(source, target) -> None:
        if Path(target).name == file_name:
            print("paused", source, flush=True)
            threading.Event().wait()
        publish(source, target)

    os.replace = paused_replace


if __name__ == "__main__":
    root, scene_id, pause_at = sys.argv[1:4]
    pause_before_publishing(pause_at)
    write_scene_outputs(Path(root), scene_id)
