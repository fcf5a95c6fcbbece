"""Per-scene assets: the catalogued Planet scene, verified."""

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from darts_assets.batching import SCENE_BACKFILL_POLICY, materialize_scenes
from darts_assets.metadata import png_markdown
from darts_core.aux_layers import AuxCoverageError
from darts_core.planet_catalogue import SceneInputError
from darts_core.scene_inputs import quicklook_png, verify_scene_item
from partitions import scene_partitions
from resources.stac import StacCatalogue
from resources.storage import StorageRoot, UnsafePathError

SCENES_FOLDER = "scenes"
SCENE_INPUT_ERRORS = (SceneInputError, AuxCoverageError, UnsafePathError, FileNotFoundError, ValueError)


@contextmanager
def failing_scene(scene_id: str) -> Iterator[None]:
    """Turn bad-input errors into a Dagster Failure that names the scene (and, via the message, the file)."""
    try:
        yield
    except SCENE_INPUT_ERRORS as error:
        message = str(error) if str(error).startswith(f"scene {scene_id}") else f"scene {scene_id}: {error}"
        raise Failure(description=message, metadata={"scene": scene_id}) from error


@asset(
    partitions_def=scene_partitions,
    group_name="scenes",
    kinds={"stac", "geotiff"},
    backfill_policy=SCENE_BACKFILL_POLICY,
    description="The Planet scene as catalogued (STAC item), its SR, udm2 and metadata verified readable.",
)
def planet_scene_item(
    context: AssetExecutionContext, stac_catalogue: StacCatalogue, storage: StorageRoot
) -> MaterializeResult:
    return materialize_scenes(context, lambda scene_id: store_catalogued_item(stac_catalogue, storage, scene_id))


def store_catalogued_item(stac_catalogue: StacCatalogue, storage: StorageRoot, scene_id: str) -> MaterializeResult:
    with failing_scene(scene_id):
        scene_folder = storage.path(SCENES_FOLDER, scene_id)
        item = find_catalogue_item(stac_catalogue, scene_id)
        verified = verify_scene_item(item)
    storage.write_bytes(json.dumps(item, indent=1).encode(), SCENES_FOLDER, scene_id, "item.json")
    preview = quicklook_png(verified.asset_hrefs["sr"])
    storage.write_bytes(preview, SCENES_FOLDER, scene_id, "quicklook.png")
    return MaterializeResult(
        metadata={
            **{
                field: value
                for field, value in dataclasses.asdict(verified).items()
                if field not in ("asset_hrefs", "assets")
            },
            "assets": MetadataValue.json(verified.asset_hrefs),
            "path": MetadataValue.path(str(scene_folder / "item.json")),
            "quicklook": png_markdown(preview, scene_id),
        }
    )


def find_catalogue_item(stac_catalogue: StacCatalogue, scene_id: str) -> dict:
    search = stac_catalogue.search()
    item = search.get_item(scene_id) if search is not None else None
    if item is None:
        raise SceneInputError(scene_id, "not found in the scene catalogue")
    return item
