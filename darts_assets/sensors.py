"""The scene sensor: pages the STAC catalogue, adds new scene partitions and requests their runs.

The cursor holds the search's fingerprint and the request of the page to resume from. When a scan
reaches the last page, the cursor keeps that page's request, so the next tick re-reads only the tail
of the catalogue: a scene appended later is picked up there. Scenes that already have a partition are
never requested again (and ``run_key`` = item id makes a repeat harmless), so ticks are idempotent.
"""

import json
import math
import time
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from darts_assets.annual import annual_coverage, annual_level2
from darts_assets.jobs import scene_job, year_job
from darts_assets.predictions import level1_scene_features
from darts_assets.scene_inputs import planet_scene
from darts_core.scene_ids import InvalidSceneIdError, parse_scene_id
from partitions import SCENE_PARTITIONS_NAME, scene_partitions, year_partition_of_scene
from resources.stac import StacCatalogue, StacSearch

MAX_PAGES_PER_TICK = 20  # bounds a tick's time; the next tick resumes from the cursor
# Dagster cancels a sensor evaluation after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS): a tick reads another page
# only while even a worst-case page (every retry timing out) would end within this budget.
TICK_BUDGET_S = 40.0
SENSOR_INTERVAL_S = 300


@dataclass
class Discovery:
    new_ids: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    pages_read: int = 0
    cursor: str | None = None


def discover_new_scenes(
    search: StacSearch, cursor: str | None, known_ids: set[str], max_pages: int, deadline: float = math.inf
) -> Discovery:
    """Read up to ``max_pages`` pages from the cursor on (at least one; more only while a worst-case page would
    end before the ``time.monotonic()`` ``deadline``); return unseen valid ids and the next cursor."""
    state = json.loads(cursor) if cursor else {}
    fingerprint = search.fingerprint()
    resume = state.get("resume") if state.get("search") == fingerprint else None
    request = search.from_portable(resume) if resume else search.first_request()
    discovery = Discovery()
    seen = set(known_ids)
    while discovery.pages_read < max_pages:
        if discovery.pages_read and time.monotonic() + search.worst_case_fetch_s > deadline:
            break  # the next tick resumes at this page
        page = search.fetch(request)
        discovery.pages_read += 1
        for item in page.items:
            classify_item(item["id"], seen, discovery)
        if page.next_request is None:
            break  # stay on the last page: later appends show up there
        request = page.next_request
    discovery.cursor = json.dumps({"search": fingerprint, "resume": search.portable(request)})
    return discovery


def classify_item(item_id: str, seen: set[str], discovery: Discovery) -> None:
    if item_id in seen:
        return
    seen.add(item_id)
    try:
        parse_scene_id(item_id)
    except InvalidSceneIdError as error:
        discovery.rejected[item_id] = str(error)
        return
    discovery.new_ids.append(item_id)


@sensor(
    job=scene_job,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Discovers new Planet scenes in the STAC catalogue and materialises their partitions.",
)
def planet_scene_sensor(context: SensorEvaluationContext, stac_catalogue: StacCatalogue):
    deadline = time.monotonic() + TICK_BUDGET_S
    search = stac_catalogue.search()
    if search is None:
        return SkipReason("the scene catalogue is empty")
    known_ids = set(context.instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME))
    discovery = discover_new_scenes(search, context.cursor, known_ids, MAX_PAGES_PER_TICK, deadline)
    for item_id, reason in discovery.rejected.items():
        context.log.warning(f"catalogue item {item_id!r} skipped: {reason}")
    context.log.info(f"{discovery.pages_read} page(s) read, {len(discovery.new_ids)} new scene(s)")
    return SensorResult(
        run_requests=[RunRequest(run_key=item_id, partition_key=item_id) for item_id in discovery.new_ids],
        dynamic_partitions_requests=[scene_partitions.build_add_request(discovery.new_ids)]
        if discovery.new_ids
        else [],
        cursor=discovery.cursor,
    )


# Which year asset a new scene materialisation makes stale.
YEAR_ASSET_OF_SCENE_ASSET = {
    planet_scene.key: annual_coverage.key,
    level1_scene_features.key: annual_level2.key,
}


def touched_years(instance: DagsterInstance, after_id: int, up_to_id: int) -> dict[AssetKey, set[str]]:
    """Per year asset, the years of the scene materialisations with storage id in ``(after_id, up_to_id]``.

    Reads partition keys only (one indexed query per scene asset, no event is deserialised)."""
    touched: dict[AssetKey, set[str]] = {}
    for scene_asset, year_asset in YEAR_ASSET_OF_SCENE_ASSET.items():
        scene_ids = instance.get_materialized_partitions(scene_asset, before_cursor=up_to_id + 1, after_cursor=after_id)
        if scene_ids:
            touched[year_asset] = {year_partition_of_scene(scene_id) for scene_id in scene_ids}
    return touched


@sensor(
    job=year_job,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Maps new scene materialisations (footprints, Level-1 features) to the years they touch and "
    "requests only those year partitions of the affected year assets.",
)
def year_sensor(context: SensorEvaluationContext):
    after_id = int(context.cursor or 0)
    up_to_id = context.instance.event_log_storage.get_maximum_record_id() or 0
    if up_to_id <= after_id:
        return SkipReason("no new events")
    touched = touched_years(context.instance, after_id, up_to_id)
    requests = [
        RunRequest(
            run_key=f"{asset_key.to_user_string()}:{year}@{up_to_id}", partition_key=year, asset_selection=[asset_key]
        )
        for asset_key, years in touched.items()
        for year in sorted(years)
    ]
    context.log.info(f"events {after_id + 1}..{up_to_id}: {len(requests)} year run(s)")
    return SensorResult(run_requests=requests, cursor=str(up_to_id))
