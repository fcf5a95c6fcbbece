"""Runs that cover several scene partitions.

A backfill of the per-scene chain launches one run per ``SCENES_PER_RUN`` scenes (``BackfillPolicy.multi_run``),
so a model is loaded once per batch instead of once per scene and a cluster starts one pod per step and batch.
Sensor runs and the demo still run one scene per run. Every scene asset body goes through
:func:`materialize_scenes`, which handles both: it loops over the run's scene partitions and reports each
scene's metadata on that scene's own materialisation.
"""

import os
import warnings
from collections.abc import Callable

from dagster import AssetExecutionContext, BackfillPolicy, BetaWarning, Failure, MaterializeResult

SCENES_PER_RUN_ENV = "DARTS_SCENES_PER_RUN"
DEFAULT_SCENES_PER_RUN = 8


def scenes_per_run() -> int:
    """Scenes per backfill run: ``$DARTS_SCENES_PER_RUN`` (default 8; read when the definitions load)."""
    value = os.environ.get(SCENES_PER_RUN_ENV) or str(DEFAULT_SCENES_PER_RUN)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SCENES_PER_RUN_ENV} must be a whole number >= 1, not {value!r}")
    return int(value)


SCENES_PER_RUN = scenes_per_run()
SCENE_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=SCENES_PER_RUN)
# Dagster 1.13 flags the ``backfill_policy`` parameter as beta on every asset that sets it: said once here.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)


def materialize_scenes(
    context: AssetExecutionContext, materialize_scene: Callable[[str], MaterializeResult]
) -> MaterializeResult:
    """Materialise every scene partition of the run, each with its own metadata.

    A single-scene run behaves as ``materialize_scene`` itself (its Failure propagates unchanged). In a
    batch, every scene is attempted; if some fail, one Failure names each of them (the step then fails and
    records no scene of the batch: rerun it, or rerun the failed scenes one per run).
    """
    scene_ids = context.partition_keys
    failures: dict[str, Failure] = {}
    for scene_id in scene_ids:
        try:
            result = materialize_scene(scene_id)
        except Failure as failure:
            if len(scene_ids) == 1:
                raise
            failures[scene_id] = failure
            continue
        context.add_asset_metadata(dict(result.metadata or {}), partition_key=scene_id)
    if failures:
        raise Failure(
            description=f"{len(failures)} of {len(scene_ids)} scenes failed: "
            + "; ".join(failure.description or scene_id for scene_id, failure in failures.items()),
            metadata={"failed_scenes": sorted(failures)},
        )
    return MaterializeResult()
