"""Atomic writes: readers never see a partial file, a crash leaves the previous version in place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``, else delete it.

    The temporary name keeps the suffix so format drivers (GeoTIFF, GeoPackage, Parquet) recognise it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as temp_path:
        temp_path.write_bytes(data)
