"""The storage root: where every DARTS output lives, a local folder or ``gs://bucket/prefix``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field
from upath import UPath

from darts_core.atomic import atomic_path

DARTS_HOME_ENV = "DARTS_HOME"
DEFAULT_DARTS_HOME = "darts_home"


class UnsafePathError(ValueError):
    """A path component (usually derived from a catalogue id) that would leave the storage root."""


def darts_home() -> Path:
    """``$DARTS_HOME`` (default ``./darts_home``) as an absolute local path."""
    return Path(os.environ.get(DARTS_HOME_ENV, DEFAULT_DARTS_HOME)).expanduser().resolve()


def check_path_component(part: str) -> str:
    """Return ``part`` if it is one plain path component, else raise :class:`UnsafePathError` naming it."""
    if (
        not isinstance(part, str)
        or part in ("", ".", "..")
        or any(bad in part for bad in ("/", "\\", "\x00"))
        or part != part.strip()
    ):
        raise UnsafePathError(f"{part!r} is not a safe path component: it could leave the storage root")
    return part


class StorageRoot(ConfigurableResource):
    """Root of all outputs. Local paths by default; ``gs://bucket/prefix`` goes through gcsfs.

    Paths are only ever built from single, checked components, so ids from a catalogue cannot
    escape the root. Writes are atomic: a local temp file renamed into place, or one object upload.
    """

    root: str = Field(
        default_factory=lambda: str(darts_home()),
        description="Local folder or gs://bucket/prefix. Default: $DARTS_HOME (./darts_home).",
    )

    @property
    def is_local(self) -> bool:
        return UPath(self.root).protocol in ("", "file", "local")

    def path(self, *parts: str) -> UPath:
        """The path of ``parts`` below the root; each part must be a single safe component."""
        path = UPath(self.root)
        for part in parts:
            path = path / check_path_component(part)
        return path

    @contextmanager
    def atomic_output(self, *parts: str) -> Iterator[Path]:
        """Yield a local file path to write; it appears at ``path(*parts)`` only when the block succeeds."""
        target = self.path(*parts)
        if self.is_local:
            with atomic_path(Path(target.path)) as temp_path:
                yield temp_path
            return
        with tempfile.TemporaryDirectory(prefix="darts-upload-") as temp_dir:
            local = Path(temp_dir) / target.name
            yield local
            with local.open("rb") as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, length=16 * 1024 * 1024)

    @contextmanager
    def local_input(self, *parts: str) -> Iterator[Path]:
        """Yield a local path with the content of ``path(*parts)`` (downloaded first when remote)."""
        source = self.path(*parts)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist: materialise its upstream asset first")
        if self.is_local:
            yield Path(source.path)
            return
        with tempfile.TemporaryDirectory(prefix="darts-download-") as temp_dir:
            local = Path(temp_dir) / source.name
            with source.open("rb") as remote, local.open("wb") as sink:
                shutil.copyfileobj(remote, sink, length=16 * 1024 * 1024)
            yield local

    def write_bytes(self, data: bytes, *parts: str) -> UPath:
        """Write ``data`` atomically to ``path(*parts)`` and return that path."""
        with self.atomic_output(*parts) as local:
            local.write_bytes(data)
        return self.path(*parts)
