"""Shared fixtures: real data paths and small STAC items for catalogue tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.gpu import DEVICE_LOCK_FOLDER_ENV
from tests.dagster_ui import darts_ui, graphql_scene_run  # noqa: F401  (shared session fixtures)

SHARED_DATA_ENV = "DARTS_SHARED_DATA"
# ../shared/data beside the checkout; the workplace's fixed location for clones made elsewhere.
SHARED_DATA_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real third-party data (read in place): $DARTS_SHARED_DATA, else ../shared/data."""
    candidates = [Path(os.environ[SHARED_DATA_ENV])] if os.environ.get(SHARED_DATA_ENV) else SHARED_DATA_CANDIDATES
    found = next((path for path in candidates if path.is_dir()), None)
    if found is None:
        pytest.fail(f"the shared real-data folder is missing: tried {[str(p) for p in candidates]}")
    return found


def stac_item(item_id: str, day: int = 1, cloud_cover: float = 0.0, lon: float = -135.3) -> dict:
    """A minimal Planet-like STAC item (assets point nowhere: enough for discovery)."""
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": "planet",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon, 67.2], [lon + 0.1, 67.2], [lon + 0.1, 67.3], [lon, 67.3], [lon, 67.2]]],
        },
        "bbox": [lon, 67.2, lon + 0.1, 67.3],
        "properties": {"datetime": f"2021-07-{day:02d}T19:00:00Z", "eo:cloud_cover": cloud_cover},
        "links": [],
        "assets": {"sr": {"href": f"/nonexistent/{item_id}_3B_AnalyticMS_SR_clip.tif"}},
    }


@pytest.fixture(scope="session", autouse=True)
def device_lock_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test process (xdist worker) locks its own "device": the demo training in one worker must not hold up
    the model steps of another (within a worker, concurrent runs still share the lock, as on one machine)."""
    folder = tmp_path_factory.mktemp("device_locks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DEVICE_LOCK_FOLDER_ENV, str(folder))
        yield folder


# Test files that start long-running processes (the whole demo, Dagster instances, servers), scheduled first so
# that `pytest -n` (pytest-xdist, one file per worker at a time) overlaps them with the many short tests.
SLOW_FIRST = (
    "test_demo_cli.py",
    "test_scale_out.py",
    "test_ui_browser.py",
    "test_gcs_storage.py",
    "test_security.py",
    "test_faults.py",
    "test_model.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow files first (in SLOW_FIRST order), then the rest in collection order (a stable sort)."""
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
