"""Scene ids, the scene -> year rule, and the storage root's path safety and atomic writes."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from darts_core.scene_ids import InvalidSceneIdError, parse_scene_id, scene_year
from partitions import model_variant_partitions, year_partition_of_scene, year_partitions
from resources.storage import StorageRoot, UnsafePathError


@pytest.mark.parametrize(
    ("item_id", "item_type", "date"),
    [
        ("20230815_191951_90_24af", "PSScene", dt.date(2023, 8, 15)),
        ("20160909_213104_0e19", "PSScene", dt.date(2016, 9, 9)),
        ("4577307_1468121_2021-07-21_2407", "PSOrthoTile", dt.date(2021, 7, 21)),
    ],
)
def test_both_id_layouts_parse(item_id, item_type, date):
    parsed = parse_scene_id(item_id)
    assert (parsed.item_type, parsed.acquired_date, parsed.year) == (item_type, date, date.year)
    assert scene_year(item_id) == date.year


@pytest.mark.parametrize(
    "bad", ["../x", "20230815_191951_90_24af/..", "", "x", "2023-08-15_191951_24af", "a/b"]
)
def test_other_strings_are_rejected_by_name(bad):
    with pytest.raises(InvalidSceneIdError, match=re.escape(repr(bad))):
        parse_scene_id(bad)


def test_scene_to_year_partition_rule():
    assert year_partition_of_scene("4577307_1468121_2021-07-21_2407") == "2021"
    assert year_partition_of_scene("20181231_235959_00_1234") == "2018"
    assert {"2018", "2021", "2022", "2023"} <= set(year_partitions.get_partition_keys())
    assert model_variant_partitions.get_partition_keys() == ["tcvis", "notcvis"]


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "a\\b", "", ".", " x", "x\x00"])
def test_storage_paths_cannot_escape_root(tmp_path, bad):
    storage = StorageRoot(root=str(tmp_path))
    with pytest.raises(UnsafePathError):
        storage.path("scenes", bad)


def test_storage_writes_atomically_and_leaves_no_temp_files(tmp_path):
    storage = StorageRoot(root=str(tmp_path))
    storage.write_bytes(b"first", "scenes", "s1", "item.json")
    with pytest.raises(RuntimeError):
        with storage.atomic_output("scenes", "s1", "item.json") as local:
            local.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "scenes" / "s1" / "item.json").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "scenes" / "s1").iterdir()] == ["item.json"]


def test_storage_root_accepts_gcs_urls_through_the_same_code():
    storage = StorageRoot(root="gs://darts-bucket/prefix")
    assert not storage.is_local
    assert (
        str(storage.path("scenes", "20230815_191951_90_24af"))
        == "gs://darts-bucket/prefix/scenes/20230815_191951_90_24af"
    )
