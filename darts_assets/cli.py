"""The ``darts`` command line: the demo, the UI, and registering real PlanetScope downloads."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from resources.storage import DARTS_HOME_ENV, darts_home

DEFAULT_UI_PORT = 3000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="darts", description="DARTS on Dagster")
    parser.add_argument("--home", type=Path, help=f"DARTS home folder (default ${DARTS_HOME_ENV} or ./darts_home)")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="synthesise the demo region and materialise the whole graph on it")
    demo.add_argument("--seed", type=int, default=None, help="seed of the demo region (default: the synthesiser's)")
    demo.add_argument("--rebuild", action="store_true", help="synthesise the demo region again even if present")
    ui = commands.add_parser("ui", help="open the Dagster UI (and daemon) on the DARTS instance")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT)
    register = commands.add_parser("register", help="register folders of PlanetScope downloads in the catalogue")
    register.add_argument("folders", nargs="+", type=Path)
    query = commands.add_parser("query", help="run a read-only SQL query on $DARTS_HOME/darts.duckdb (spatial loaded)")
    query.add_argument("sql")
    query.add_argument("--max-rows", type=int, default=100)
    args = parser.parse_args(argv)
    if args.home:
        os.environ[DARTS_HOME_ENV] = str(args.home.expanduser().resolve())
    os.environ.setdefault(DARTS_HOME_ENV, str(darts_home()))
    if args.command == "demo":
        return run_demo(seed=args.seed, rebuild=args.rebuild)
    if args.command == "ui":
        return open_ui(args.host, args.port)
    if args.command == "query":
        return query_database(args.sql, args.max_rows)
    return register_folders(args.folders)


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(seed: int | None, rebuild: bool) -> int:
    """Synthesise (or reuse) the demo region, catalogue it, discover it with the sensor, materialise all."""
    from darts_assets import demo

    started = time.perf_counter()
    home = darts_home()
    stage(f"1/4 demo region in {home / demo.DEMO_REGION_FOLDER}")
    region = demo.ensure_demo_region(home, seed=seed, rebuild=rebuild)
    print(f"   {len(region.scenes)} Planet scenes, DEM mosaic, TCVIS, land cover, labels, references")
    stage("2/4 scene catalogue")
    report = demo.register_demo_scenes(region)
    print(f"   {len(report.registered)} scenes in {demo.catalogue_path()}")
    for item, reason in report.failed.items():
        print(f"   ! {item}: {reason}")
    instance = demo.demo_instance(home)
    stage("3/4 scene sensor")
    discovery = demo.tick_scene_sensor(instance)
    print(f"   {len(discovery.run_requests)} new scene partition(s) discovered")
    stage("4/4 materialising the asset graph")
    reports = demo.materialise_graph(instance, discovery.run_requests, on_outcome=print_outcome, on_stage=print_stage)
    failures = sum(len(report.failed) for report in reports)
    print_summary(home, instance, failures, time.perf_counter() - started)
    return 1 if failures else 0


def print_stage(stage) -> None:
    assets = ", ".join(key.to_user_string() for key in stage.asset_keys)
    print(f"   -- {stage.job_name}: {assets}", flush=True)


def print_outcome(outcome) -> None:
    label = outcome.partition_key or "(all)"
    if outcome.success:
        print(f"   ok   {label}  {outcome.seconds:.1f} s", flush=True)
    else:
        print(f"   FAIL {label}  {outcome.error}", flush=True)


def print_summary(home: Path, instance, failures: int, seconds: float) -> None:
    from darts_assets import demo

    summary = demo.summarise(home, instance)
    stage(f"done in {seconds:.0f} s" + (f", {failures} partition(s) failed" if failures else ""))
    for label, value in summary.items():
        print(f"   {label:<22} {value}")
    print("   open the UI with:      uv run darts ui")


def open_ui(host: str, port: int) -> int:
    """Run ``dagster dev`` (webserver + daemon) on the DARTS instance; replaces this process."""
    from darts_assets.demo import prepare_instance_home

    dagster_home = prepare_instance_home(darts_home())
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    print(f"Dagster UI on http://{host}:{port} (instance {dagster_home})", flush=True)
    os.chdir(workspace.parent)
    os.execv(command[0], command)
    return 0  # not reached


def query_database(sql: str, max_rows: int) -> int:
    from darts_assets.query import run_query
    from resources.duckdb import DartsDuckDB

    print(run_query(sql, Path(DartsDuckDB().database), max_rows=max_rows))
    return 0


def register_folders(folders: list[Path]) -> int:
    from darts_assets.demo import catalogue_path
    from darts_core.planet_catalogue import register_scene_folders

    report = register_scene_folders(folders, catalogue_path())
    print(f"{len(report.registered)} scene(s) registered in {catalogue_path()}")
    for item, reason in report.failed.items():
        print(f"! {item}: {reason}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
