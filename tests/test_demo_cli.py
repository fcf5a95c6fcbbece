"""`darts demo` end to end on a fresh DARTS_HOME: sensor-launched runs on a persistent instance, idempotent rerun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunsFilter

from darts_assets.jobs import SCENE_ASSETS
from darts_core.demo_region import load_demo_region


def run_demo(home: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DARTS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "darts_assets.cli", "demo"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("darts_home")
    first = run_demo(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== 4/4 materialising the asset graph" in first.stdout
    return home


def test_demo_materialises_every_scene_through_the_sensor(demo_home):
    scenes = {scene.item_id for scene in load_demo_region(demo_home / "demo_region").scenes}
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        assert set(instance.get_dynamic_partitions("planet_scenes")) == scenes
        for asset in SCENE_ASSETS:
            assert instance.get_materialized_partitions(asset.key) == scenes, asset.key
        sensor_runs = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": "planet_scene_sensor"}))
        assert {run.tags["dagster/run_key"] for run in sensor_runs} == scenes


def test_rerun_is_idempotent(demo_home):
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        runs_before = instance.get_runs_count()
    catalogue = demo_home / "catalogue" / "planet_scenes.parquet"
    catalogue_bytes = catalogue.read_bytes()
    second = run_demo(demo_home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new scene partition(s) discovered" in second.stdout
    assert catalogue.read_bytes() == catalogue_bytes
    with DagsterInstance.from_config(str(demo_home / "dagster")) as instance:
        assert instance.get_runs_count() == runs_before
