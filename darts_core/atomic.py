"""Atomic writes: readers never see a partial file, a crash leaves the previous version in place."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary files live in this hidden subfolder of the target's folder (same file system, so the rename is
# atomic): a file left behind by a killed writer never matches a reader's glob such as ``year=*/*.parquet``
# (DuckDB's globs match dot files, so a hidden name beside the target would not be enough).
PARTIAL_FOLDER = ".partial"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path for ``target``; on success rename it onto ``target``, else delete it.

    The temporary name keeps the suffix so format drivers (GeoTIFF, GeoPackage, Parquet) recognise it.
    """
    target = Path(target)
    temp_path = _temporary_file(target)
    try:
        yield temp_path
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)
        _remove_if_empty(temp_path.parent)


def _temporary_file(target: Path, attempts: int = 100) -> Path:
    """A new empty file in the partial folder beside ``target``.

    A concurrent writer may remove the empty folder meanwhile (between mkdir and mkstemp, or inside mkdir between
    its "exists" and "is a folder" checks): each such loss is retried after yielding the processor, so that the
    other writer gets past its removal (5 attempts were once all lost with 4 writers on 2 busy cores).
    """
    for _ in range(attempts - 1):
        try:
            return _new_partial_file(target)
        except (FileNotFoundError, FileExistsError):
            time.sleep(0)
    return _new_partial_file(target)


def _new_partial_file(target: Path) -> Path:
    partial = target.parent / PARTIAL_FOLDER
    partial.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=partial, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(handle)
    return Path(temp_name)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: another writer is using it (or a killed one left its file)
        pass


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as temp_path:
        temp_path.write_bytes(data)
