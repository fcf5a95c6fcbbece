"""A real ``darts ui`` (dagster dev: webserver, daemon, code server) on a small demo instance, for end-to-end tests.

The instance holds only what the tests need: the demo region's scenes catalogued and added as scene partitions
(nothing materialised). The server runs with fake cloud credentials in its environment, so tests can check that
they never reach the run's records. Session fixtures (imported by ``tests/conftest.py``): :func:`darts_ui` and
:func:`graphql_scene_run`; the UI and the security tests share one server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from resources.stac import free_loopback_port

REPO_ROOT = Path(__file__).resolve().parents[1]
UI_STARTUP_TIMEOUT_S = 300  # dagster dev loads the code location in two processes: slow on 2 busy cores
RUN_TIMEOUT_S = 600
STOP_GRACE_S = 30
CODE_LOCATION = "darts_assets.definitions"
REPOSITORY = "__repository__"
TERMINAL_RUN_STATUSES = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class DartsUi:
    """A running ``darts ui``: its DARTS home, port, process (leader of its own process group) and log."""

    home: Path
    port: int
    process: subprocess.Popen
    log: Path
    scene_ids: list[str]
    credentials: dict[str, str]  # fake credential variables in the server's environment
    secrets: dict[str, str]  # name -> secret value (from those credentials) that must never be recorded

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance_home(self) -> Path:
        return self.home / "dagster"

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=120)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST a GraphQL document to the webserver; its ``data`` (fails on GraphQL errors)."""
        body = {"query": query, "variables": variables or {}}
        response = requests.post(f"{self.url}/graphql", json=body, timeout=120)
        response.raise_for_status()
        answer = response.json()
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.instance_home))


def prepare_demo_home(home: Path) -> list[str]:
    """The demo region catalogued under ``home`` and its scenes added as partitions; returns the scene ids."""
    from darts_assets.demo import ensure_demo_region, prepare_instance_home
    from darts_core.planet_catalogue import register_scene_folders
    from partitions import SCENE_PARTITIONS_NAME
    from resources.stac import CATALOGUE_RELATIVE_PATH

    region = ensure_demo_region(home)
    report = register_scene_folders([scene.folder for scene in region.scenes], home / CATALOGUE_RELATIVE_PATH)
    assert not report.failed, report.failed
    scene_ids = sorted(report.registered)
    with DagsterInstance.from_config(str(prepare_instance_home(home))) as instance:
        instance.add_dynamic_partitions(SCENE_PARTITIONS_NAME, scene_ids)
    return scene_ids


def fake_credentials(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Environment variables with fake Google / Earth Engine credentials, and the secret values they carry."""
    private_key = f"-----BEGIN PRIVATE KEY-----FAKE{uuid.uuid4().hex}-----END PRIVATE KEY-----"
    token = f"ee-token-{uuid.uuid4().hex}"
    key_file = folder / "service-account.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": private_key, "client_email": "x@y"}))
    environment = {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "EARTHENGINE_TOKEN": token}
    return environment, {"service account private key": private_key, "EARTHENGINE_TOKEN": token}


def server_environment(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without DARTS/Dagster settings, pointed at ``home``, plus ``extra``."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(("DARTS_", "DAGSTER_"))}
    return {**inherited, "DARTS_HOME": str(home), **extra}


def reset_sigint() -> None:
    """In the child: default SIGINT handling (a shell's background job ignores it, and dagster dev relies on it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_darts_ui(port: int, environment: dict[str, str], log: Path) -> subprocess.Popen:
    """``darts ui --port PORT`` (default host) in a new session, output to ``log``."""
    command = [sys.executable, "-m", "darts_assets.cli", "ui", "--port", str(port)]
    with log.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=reset_sigint,
        )


def log_tail(log: Path, characters: int = 4000) -> str:
    return log.read_text(errors="replace")[-characters:] if log.exists() else "(no log)"


def wait_for_server_info(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Block until ``/server_info`` answers; fail with the log's tail if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"darts ui exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(f"{url}/server_info", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"darts ui did not answer {url}/server_info within {timeout_s} s:\n{log_tail(log)}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGINT to the server's process group (dagster dev shuts its children down), then SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> DagsterRunStatus:
    """Poll the run's status until it is terminal (or fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in TERMINAL_RUN_STATUSES:
            return status
        time.sleep(2)
    pytest.fail(f"run {run_id} did not finish within {timeout_s} s (last status {status})")


@pytest.fixture(scope="session")
def darts_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DartsUi]:
    """``darts ui`` on a fresh demo home (scenes catalogued, nothing materialised); killed at teardown."""
    folder = tmp_path_factory.mktemp("darts_ui")
    home = folder / "home"
    scene_ids = prepare_demo_home(home)
    credentials, secrets = fake_credentials(folder)
    port, log = free_loopback_port(), folder / "darts_ui.log"
    started = time.monotonic()
    process = start_darts_ui(port, server_environment(home, credentials), log)
    try:
        server = DartsUi(home, port, process, log, scene_ids, credentials, secrets)
        wait_for_server_info(server.url, process, log, UI_STARTUP_TIMEOUT_S)
        print(f"darts ui answered on {server.url} after {time.monotonic() - started:.0f} s (log {log})")
        yield server
    finally:
        stop_process_group(process)


@dataclass(frozen=True)
class LaunchedRun:
    run_id: str
    partition_key: str
    status: DagsterRunStatus
    seconds: float


@pytest.fixture(scope="session")
def graphql_scene_run(darts_ui: DartsUi) -> LaunchedRun:
    """One partition of the first scene asset, launched through ``DagsterGraphQLClient`` and waited for."""
    partition_key = darts_ui.scene_ids[-1]
    client = darts_ui.client()
    started = time.monotonic()
    run_id = client.submit_job_execution(
        "scene_job",
        repository_location_name=CODE_LOCATION,
        repository_name=REPOSITORY,
        tags={"dagster/partition": partition_key},
        asset_selection=["planet_scene_item"],
    )
    status = wait_for_run(client, run_id)
    return LaunchedRun(run_id, partition_key, status, time.monotonic() - started)
