"""Vector work on every core: GEOS (shapely) and PROJ (pyproj) release the GIL inside their array calls, so a
thread pool runs them on all cores without copying geometries into other processes (2x on 2 cores for the
database stage, benchmarks/database.py).

Results never depend on the number of threads: work is split into contiguous chunks, each computed exactly as
one call would compute it, and put back in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

Item = TypeVar("Item")
Result = TypeVar("Result")
MIN_CHUNK = 64  # rows or coordinates below which a thread costs more than it saves
THREADS_VARIABLE = "DARTS_THREADS"


def worker_count() -> int:
    """``$DARTS_THREADS`` when set (e.g. 1 where several steps share a node), else the cores this process may run
    on (its CPU affinity where the OS has one)."""
    if configured := os.environ.get(THREADS_VARIABLE, "").strip():
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be a positive whole number, got {configured!r}")
        return int(configured)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def map_in_threads(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[function(item) for item in items]`` on up to ``worker_count()`` threads, in order; in this thread when
    there is one item or one core. The first exception raised is raised here."""
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darts-vector") as pool:
        return list(pool.map(function, items))


def chunk_bounds(count: int, chunks: int | None = None) -> list[slice]:
    """``count`` rows as contiguous slices, one per worker (``chunks`` to choose), none below ``MIN_CHUNK``."""
    chunks = min(chunks or worker_count(), max(1, count // MIN_CHUNK))
    edges = np.linspace(0, count, chunks + 1).round().astype(int)
    return [slice(int(start), int(stop)) for start, stop in zip(edges[:-1], edges[1:], strict=True)]


def in_chunks(function: Callable[..., np.ndarray], *columns: np.ndarray) -> np.ndarray:
    """``function(*columns)`` for a row-wise ``function`` (result row i from row i of every column, as shapely's
    and numpy's vectorised calls), computed over contiguous chunks on all cores and concatenated."""
    columns = tuple(np.asarray(column) for column in columns)
    parts = map_in_threads(lambda rows: function(*(column[rows] for column in columns)), chunk_bounds(len(columns[0])))
    return np.concatenate(parts)


def map_in_batches(
    function: Callable[[Item], Result], items: Sequence[Item] | np.ndarray, weights: np.ndarray
) -> list[Result]:
    """``[function(item) for item in items]`` for many small items: dealt, heaviest first, into a few batches of
    similar total ``weights`` (one task each, so the pool's overhead is per batch, not per item), in order."""
    count = len(items)
    batches = min(count, 4 * worker_count())
    if batches <= 1:
        return [function(item) for item in items]
    heaviest_first = np.argsort(-np.asarray(weights), kind="stable")
    dealt = [heaviest_first[batch::batches] for batch in range(batches)]
    results: list = [None] * count
    for positions, batch_results in zip(
        dealt, map_in_threads(lambda positions: [function(items[i]) for i in positions], dealt), strict=True
    ):
        for position, result in zip(positions, batch_results, strict=True):
            results[position] = result
    return results
