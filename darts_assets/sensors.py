"""The scene sensor: pages the STAC catalogue, adds new scene partitions and requests their runs.

The cursor holds the search's fingerprint and the request of the page to resume from. When a scan
reaches the last page, the cursor keeps that page's request, so the next tick re-reads only the tail
of the catalogue: a scene appended later is picked up there. Scenes that already have a partition are
never requested again (and ``run_key`` = item id makes a repeat harmless), so ticks are idempotent.
"""

import json
from dataclasses import dataclass, field

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from darts_assets.jobs import scene_job
from darts_core.scene_ids import InvalidSceneIdError, parse_scene_id
from partitions import SCENE_PARTITIONS_NAME, scene_partitions
from resources.stac import StacCatalogue, StacSearch

MAX_PAGES_PER_TICK = 20  # bounds a tick's time; the next tick resumes from the cursor
SENSOR_INTERVAL_S = 300


@dataclass
class Discovery:
    new_ids: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    pages_read: int = 0
    cursor: str | None = None


def discover_new_scenes(search: StacSearch, cursor: str | None, known_ids: set[str], max_pages: int) -> Discovery:
    """Read up to ``max_pages`` pages from the cursor on; return unseen valid ids and the next cursor."""
    state = json.loads(cursor) if cursor else {}
    fingerprint = search.fingerprint()
    resume = state.get("resume") if state.get("search") == fingerprint else None
    request = search.from_portable(resume) if resume else search.first_request()
    discovery = Discovery()
    seen = set(known_ids)
    while discovery.pages_read < max_pages:
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
    search = stac_catalogue.search()
    if search is None:
        return SkipReason("the scene catalogue is empty")
    known_ids = set(context.instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME))
    discovery = discover_new_scenes(search, context.cursor, known_ids, MAX_PAGES_PER_TICK)
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
