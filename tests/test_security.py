"""Security: the UI listens on loopback only, SQL never splices file names or column names, ids cannot leave the
storage root, and credentials in the environment never reach run records, logs or outputs.

Already covered elsewhere (not repeated): SQL-model variables and roots with quotes (test_sql_models), ``../x``
catalogue ids in the sensor and the scene asset (test_scene_sensor, test_scene_asset), StorageRoot components and
scene-id parsing (test_scene_ids_and_storage), escaping ids in ``darts register`` (test_planet_catalogue).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import duckdb
import geopandas as gpd
import pytest
import rustac
import shapely
from dagster import SkipReason, build_sensor_context, instance_for_test, materialize

import darts_assets.cli as cli
from darts_assets.definitions import defs
from darts_assets.jobs import SCENE_ASSETS
from darts_assets.sensors import planet_scene_sensor
from partitions import SCENE_PARTITIONS_NAME
from resources.duckdb import prepare_connection, read_geoparquet
from resources.stac import StacCatalogue
from resources.storage import StorageRoot
from tests.conftest import stac_item
from tests.dagster_ui import REPO_ROOT, DartsUi, LaunchedRun

HOSTILE_KEY = "2021'; DROP TABLE sentinel; --"
HOSTILE_COLUMN = 'geometry", (SELECT count(*) FROM sentinel) AS "leaked'
HOSTILE_IDS = [
    "../x",
    "..",
    "/etc/passwd",
    "20230815_191951_90_24af/../../x",
    "a\\b",
    "..%2Fx",
    HOSTILE_KEY,
]
GOOD_IDS = ["20210701_190000_00_24af", "4577307_1468121_2021-07-21_2407"]
TCP_LISTEN = "0A"


def captured_ui_command(monkeypatch: pytest.MonkeyPatch, home: Path, *options: str) -> list[str]:
    """The command ``darts ui`` would exec (``os.execv`` captured instead of replacing this process)."""
    captured: list[list[str]] = []
    monkeypatch.setenv("DARTS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "unused"))  # restored after `darts ui` sets it
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(os, "execv", lambda path, argv: captured.append(list(argv)))
    assert cli.main(["--home", str(home), "ui", *options]) == 0
    (command,) = captured
    return command


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_darts_ui_binds_to_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = captured_ui_command(monkeypatch, tmp_path)
    assert default[1:3] == ["dev", "-w"] and option(default, "-h") == "127.0.0.1"
    chosen = captured_ui_command(monkeypatch, tmp_path, "--host", "0.0.0.0", "--port", "4000")
    assert (option(chosen, "-h"), option(chosen, "-p")) == ("0.0.0.0", "4000")


def process_group(pgid: int) -> list[int]:
    """The pids whose process group is ``pgid`` (from /proc/<pid>/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def socket_inodes(pids: list[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    return inodes


def decode_address(hex_address: str) -> tuple[str, int]:
    """``/proc/net/tcp{,6}`` local address (little-endian 32-bit words) as (ip, port)."""
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port_hex, 16)


def listening_tcp_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (ip, port) of every listening TCP socket of this network namespace."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == TCP_LISTEN:
                sockets[fields[9]] = decode_address(fields[1])
    return sockets


def test_running_ui_listens_on_loopback_only(darts_ui: DartsUi) -> None:
    inodes = socket_inodes(process_group(darts_ui.process.pid))
    listening = {address for inode, address in listening_tcp_sockets().items() if inode in inodes}
    assert ("127.0.0.1", darts_ui.port) in listening
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening


def test_geoparquet_reads_bind_hostile_paths_and_quote_hostile_column_names(tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE_KEY
    folder.mkdir()
    frame = gpd.GeoDataFrame(
        {"image_id": ["a"], HOSTILE_COLUMN: [7]}, geometry=[shapely.Point(10, 70)], crs="EPSG:4326"
    )
    frame.to_parquet(folder / "features.parquet")
    con = prepare_connection(duckdb.connect())
    con.execute("CREATE TABLE sentinel AS SELECT 1 AS x")
    read = read_geoparquet(con, str(folder / "*.parquet"))
    assert list(read.columns) == ["image_id", HOSTILE_COLUMN, "geometry"]
    assert read[HOSTILE_COLUMN].tolist() == [7] and read.geometry.iloc[0].equals(shapely.Point(10, 70))
    assert con.sql("SELECT x FROM sentinel").fetchall() == [(1,)]


def test_hostile_catalogue_ids_never_become_scene_partitions(tmp_path: Path) -> None:
    catalogue_file = tmp_path / "catalogue.parquet"
    ids = [GOOD_IDS[0], *HOSTILE_IDS, GOOD_IDS[1]]
    rustac.write_sync(str(catalogue_file), [stac_item(item_id, day=1 + index) for index, item_id in enumerate(ids)])
    catalogue = StacCatalogue(catalogue_path=str(catalogue_file))
    with instance_for_test() as instance:
        with build_sensor_context(instance=instance, resources={"stac_catalogue": catalogue}) as context:
            result = planet_scene_sensor(context)
        assert not isinstance(result, SkipReason)
        assert sorted(request.partition_key for request in result.run_requests) == sorted(GOOD_IDS)
        (added,) = result.dynamic_partitions_requests
        assert sorted(added.partition_keys) == sorted(GOOD_IDS)


def failure_messages(result) -> str:
    return " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())


def test_hand_added_escaping_partition_fails_every_scene_asset_without_writing(tmp_path: Path) -> None:
    """A partition added by hand (the UI's "Add a partition") that would leave the root: each asset fails alone."""
    root = tmp_path / "root"
    root.mkdir()
    resources = {
        **defs.resources,
        "storage": StorageRoot(root=str(root)),
        "stac_catalogue": StacCatalogue(catalogue_path=str(tmp_path / "empty.parquet")),
    }
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, ["../x"])
        for asset in SCENE_ASSETS:
            result = materialize(
                [asset], instance=instance, resources=resources, partition_key="../x", raise_on_error=False
            )
            assert not result.success, asset.key
            assert "scene ../x" in failure_messages(result), asset.key
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root"]
    assert not any(root.iterdir())


def files_containing(folder: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_credentials_never_reach_run_records_logs_or_outputs(darts_ui: DartsUi, graphql_scene_run: LaunchedRun) -> None:
    """Fake Google/Earth Engine credentials are in the server's environment; no file it writes holds them."""
    environment = Path(f"/proc/{darts_ui.process.pid}/environ").read_bytes().split(b"\0")
    assert all(f"{name}={value}".encode() in environment for name, value in darts_ui.credentials.items())
    assert files_containing(darts_ui.instance_home, graphql_scene_run.run_id)  # the scan sees the run's records
    assert files_containing(darts_ui.home / "scenes", graphql_scene_run.partition_key)  # ... and its outputs
    for name, secret in darts_ui.secrets.items():
        assert files_containing(darts_ui.home, secret) == [], name
        assert secret not in darts_ui.log.read_text(errors="replace"), name
