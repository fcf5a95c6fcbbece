"""The storage root: where every DARTS output lives, a local folder or ``gs://bucket/prefix``.

Google Cloud Storage goes through gcsfs, configured from the environment only, so that no credential is ever a
field of a resource (run config, UI, metadata): ``STORAGE_EMULATOR_HOST`` (``http://host:port``) selects an
emulator, reached anonymously; otherwise Application Default Credentials apply (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's ADC file, or the metadata server: GKE Workload Identity).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from dagster import ConfigurableResource
from fsspec import AbstractFileSystem
from pydantic import Field
from upath import UPath

from darts_core.atomic import atomic_path

DARTS_HOME_ENV = "DARTS_HOME"
DEFAULT_DARTS_HOME = "darts_home"
EMULATOR_HOST_ENV = "STORAGE_EMULATOR_HOST"
GCS_PROTOCOLS = ("gs", "gcs")
CACHE_FOLDER = "darts-storage-cache"


class UnsafePathError(ValueError):
    """A path component (usually derived from a catalogue id) that would leave the storage root."""


def darts_home() -> Path:
    """``$DARTS_HOME`` (default ``./darts_home``) as an absolute local path."""
    return Path(os.environ.get(DARTS_HOME_ENV, DEFAULT_DARTS_HOME)).expanduser().resolve()


def gcs_emulator_endpoint() -> str | None:
    """The emulator URL from ``STORAGE_EMULATOR_HOST`` (``host:port`` gets ``http://``), or None."""
    host = os.environ.get(EMULATOR_HOST_ENV, "").strip()
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def gcs_storage_options() -> dict[str, object]:
    """gcsfs options from the environment: the emulator anonymously, else Application Default Credentials.

    Listings are not cached: other processes (scene runs, pods) add files while a year or product step globs.
    """
    endpoint = gcs_emulator_endpoint()
    credentials = {"endpoint_url": endpoint, "token": "anon"} if endpoint else {"token": "google_default"}
    return {**credentials, "use_listings_cache": False}


def use_gcs_json_api() -> None:
    """Serve ``gs://`` with gcsfs's JSON-API filesystem (idempotent).

    gcsfs's default class (``ExtendedGcsFileSystem``) first asks the gRPC storage-control API for each bucket's
    layout (zonal, hierarchical), which emulators do not serve: every call would wait out a 60 s retry. DARTS
    writes whole objects and never renames folders, so the JSON API is all it needs, on GCS and emulators alike.
    """
    from gcsfs.core import GCSFileSystem

    for protocol in GCS_PROTOCOLS:
        if fsspec.registry.get(protocol) is not GCSFileSystem:
            fsspec.register_implementation(protocol, GCSFileSystem, clobber=True)


def storage_options(protocol: str) -> dict[str, object]:
    """The fsspec options of ``protocol`` (none for local paths), from the environment."""
    if protocol in GCS_PROTOCOLS:
        use_gcs_json_api()
        return gcs_storage_options()
    return {}


def remote_filesystem(protocol: str) -> AbstractFileSystem:
    """The fsspec filesystem of a remote ``protocol`` (e.g. ``gs``) configured like the storage root's paths."""
    return fsspec.filesystem(protocol, **storage_options(protocol))


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
    def protocol(self) -> str:
        return UPath(self.root).protocol

    @property
    def is_local(self) -> bool:
        return self.protocol in ("", "file", "local")

    def path(self, *parts: str) -> UPath:
        """The path of ``parts`` below the root; each part must be a single safe component."""
        path = UPath(self.root, **storage_options(self.protocol))
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
            target.fs.put_file(str(local), target.path)  # one object upload: visible only once complete

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
            source.fs.get_file(source.path, str(local))
            yield local

    def cached_input(self, *parts: str) -> Path:
        """A local file with the content of ``path(*parts)`` that stays put while the object is unchanged.

        Local roots: the file itself. Remote: a download kept in the system temp folder, keyed by the object's URL
        and generation (etag), so that callers caching by path and mtime (the model of a checkpoint) reuse it.
        Older versions stay until the temp folder is cleaned (a process may still be reading one).
        """
        source = self.path(*parts)
        if self.is_local:
            return Path(source.path)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist: materialise its upstream asset first")
        info = source.fs.info(source.path)
        version = str(info.get("generation") or info.get("etag") or info.get("mtime") or info.get("size"))
        key = hashlib.sha256(f"{source}\n{version}".encode()).hexdigest()[:24]
        local = Path(tempfile.gettempdir()) / CACHE_FOLDER / key / source.name
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(local) as temp_path:
                source.fs.get_file(source.path, str(temp_path))
        return local

    def write_bytes(self, data: bytes, *parts: str) -> UPath:
        """Write ``data`` atomically to ``path(*parts)`` and return that path."""
        with self.atomic_output(*parts) as local:
            local.write_bytes(data)
        return self.path(*parts)
