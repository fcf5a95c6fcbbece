"""Concurrency pool slots of a local instance: giving back the slots of runs whose process died.

A step holds its pool slot (``gpu``, ``duckdb``) until it ends. A run process killed hard (out of memory,
``kill -9``) never gives its slots back and stays STARTED, so the next run would wait for that pool forever.
On a cluster the daemon's run monitoring fails such runs; on one machine ``darts demo`` calls
:func:`release_slots_of_dead_runs` first. Only for instances whose runs all start on this machine.
"""

import os

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

IN_PROGRESS = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_process_alive(instance: DagsterInstance, run_id: str) -> bool:
    """Whether the process that started the run (its RUN_START event's pid) still exists on this machine."""
    starts = instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
    return not starts or process_exists(starts[0].dagster_event.pid)


def release_slots_of_dead_runs(instance: DagsterInstance) -> list[str]:
    """Free the pool slots of runs that have ended or whose process is gone (those are marked failed)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = {
        slot.run_id
        for pool in storage.get_concurrency_keys()
        for slot in storage.get_concurrency_info(pool).claimed_slots
    }
    released = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        in_progress = run is not None and run.status in IN_PROGRESS
        if in_progress and run_process_alive(instance, run_id):
            continue
        if in_progress:
            instance.report_run_failed(run, "its process is gone: its pool slots were given back")
        storage.free_concurrency_slots_for_run(run_id)
        released.append(run_id)
    return released
