"""The scene catalogue: a STAC API searched with pystac-client.

By default the catalogue is a stac-geoparquet file served on loopback by ``rustac serve`` (memory
backend: ``--use-duckdb false``, because rustac's DuckDB backend tries to download an extension and
hangs offline). The resource starts the server for the duration of a run or sensor tick and stops it
afterwards. Any other STAC API can be used instead through ``api_url``.

The memory backend pages with ``skip`` in its next links and answers bbox/datetime/ids searches, but
implements neither the query nor the filter extension: cloud cover is then filtered client-side.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from pystac_client import Client, ItemSearch
from pystac_client.conformance import ConformanceClasses
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from resources.storage import darts_home

CATALOGUE_RELATIVE_PATH = Path("catalogue") / "planet_scenes.parquet"
CLOUD_COVER = "eo:cloud_cover"
BACKOFF_FACTOR = 0.5  # urllib3: the k-th consecutive retry waits BACKOFF_FACTOR * 2**(k-1) s (the first one 0 s)


class StacCatalogueError(RuntimeError):
    """The STAC API could not be started or answered with an error."""


def default_catalogue_path() -> str:
    return str(darts_home() / CATALOGUE_RELATIVE_PATH)


def rustac_executable() -> str:
    """The ``rustac`` console script installed beside this interpreter."""
    candidate = Path(sys.executable).with_name("rustac")
    return str(candidate) if candidate.exists() else "rustac"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_stac_geoparquet(catalogue: Path, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve a stac-geoparquet file with ``rustac serve`` on a free loopback port; yield the API URL."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    command = [rustac_executable(), "serve", "--use-duckdb", "false", "--create-collections"]
    command += ["--addr", f"127.0.0.1:{port}", str(catalogue)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(url, process, startup_timeout_s)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Block until the server answers a search (items are loaded), or raise with its stderr."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StacCatalogueError(f"rustac serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if requests.post(f"{url}/search", json={"limit": 1}, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise StacCatalogueError(f"rustac serve did not answer at {url} within {timeout_s} s")


@dataclass(frozen=True)
class PageRequest:
    """One page of a search: what to send to get it (first page, or a server's ``next`` link)."""

    href: str
    method: str
    body: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PageRequest:
        return cls(href=data["href"], method=data["method"], body=data.get("body"))


@dataclass(frozen=True)
class SearchPage:
    items: list[dict[str, Any]]
    request: PageRequest
    next_request: PageRequest | None


class StacSearch:
    """Paged item search on one STAC API, resumable from any page's request."""

    def __init__(
        self,
        url: str,
        *,
        identity: str | None = None,
        bbox: list[float] | None = None,
        datetime: str | None = None,
        collections: list[str] | None = None,
        max_cloud_cover: float | None = None,
        page_size: int = 100,
        timeout_s: float = 5.0,
        max_retries: int = 2,
    ) -> None:
        self.worst_case_fetch_s = worst_case_request_s(timeout_s, max_retries)
        retry = Retry(
            total=max_retries,
            backoff_factor=BACKOFF_FACTOR,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST searches are safe to retry
        )
        self._stac_io = StacApiIO(timeout=timeout_s, max_retries=retry)
        try:
            self._client = Client.open(url, stac_io=self._stac_io, timeout=timeout_s)
        except Exception as error:  # pystac-client raises several types for an unreachable API
            raise StacCatalogueError(f"STAC API at {url} is not reachable: {error}") from error
        self.root_url = url.rstrip("/")
        self.identity = identity or self.root_url
        self.server_filters_cloud_cover = self._client.conforms_to(ConformanceClasses.QUERY)
        self.max_cloud_cover = max_cloud_cover
        self._search_parameters = {
            "bbox": bbox,
            "datetime": datetime,
            "collections": collections or None,
            "limit": page_size,
        }

    @property
    def search_href(self) -> str:
        return self._client.get_search_link().href

    def fingerprint(self) -> str:
        """Identifies the search (API and parameters): a cursor is only valid for the same fingerprint."""
        described = {
            "catalogue": self.identity,
            "max_cloud_cover": self.max_cloud_cover,
            **self._search_parameters,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def first_request(self, filter_cloud_cover: bool = True, **overrides: Any) -> PageRequest:
        """The request of the first page; ``overrides`` replace search parameters."""
        parameters = {**self._search_parameters, **overrides}
        if filter_cloud_cover and self.max_cloud_cover is not None and self.server_filters_cloud_cover:
            parameters["query"] = {CLOUD_COVER: {"lte": self.max_cloud_cover}}
        search = ItemSearch(self.search_href, method="POST", stac_io=self._stac_io, client=self._client, **parameters)
        return PageRequest(href=self.search_href, method="POST", body=search.get_parameters())

    def fetch(self, request: PageRequest, filter_cloud_cover: bool = True) -> SearchPage:
        """Fetch one page; filter cloud cover client-side when the server cannot."""
        try:
            page = self._stac_io.read_json(request.href, method=request.method, parameters=request.body)
        except Exception as error:
            raise StacCatalogueError(f"STAC search at {request.href} failed: {error}") from error
        items = page.get("features", [])
        if filter_cloud_cover:
            items = [item for item in items if self._cloud_cover_ok(item)]
        return SearchPage(items=items, request=request, next_request=next_page_request(page))

    def portable(self, request: PageRequest) -> dict[str, Any]:
        """``request`` as a dict whose href is relative to the API root (servers may move between ticks)."""
        href = request.href.removeprefix(self.root_url) if request.href.startswith(self.root_url) else request.href
        return {**request.to_dict(), "href": href}

    def from_portable(self, data: dict[str, Any]) -> PageRequest:
        request = PageRequest.from_dict(data)
        if request.href.startswith("/"):
            return PageRequest(self.root_url + request.href, request.method, request.body)
        return request

    def pages(self, start: PageRequest | None = None) -> Iterator[SearchPage]:
        request: PageRequest | None = start or self.first_request()
        while request is not None:
            page = self.fetch(request)
            yield page
            request = page.next_request

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        """The item with this id, or None."""
        request = self.first_request(filter_cloud_cover=False, ids=[item_id], bbox=None, datetime=None)
        page = self.fetch(request, filter_cloud_cover=False)
        return next((item for item in page.items if item["id"] == item_id), None)

    def _cloud_cover_ok(self, item: dict[str, Any]) -> bool:
        if self.max_cloud_cover is None or self.server_filters_cloud_cover:
            return True
        cloud_cover = item.get("properties", {}).get(CLOUD_COVER)
        return cloud_cover is None or cloud_cover <= self.max_cloud_cover


def worst_case_request_s(timeout_s: float, max_retries: int) -> float:
    """How long one request can take when every attempt times out: attempts x timeout + the backoff sleeps."""
    backoff = sum(BACKOFF_FACTOR * 2 ** (retry - 1) for retry in range(2, max_retries + 1))
    return (max_retries + 1) * timeout_s + backoff


def next_page_request(page: dict[str, Any]) -> PageRequest | None:
    link = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
    if link is None:
        return None
    return PageRequest(href=link["href"], method=link.get("method", "GET"), body=link.get("body"))


class StacCatalogue(ConfigurableResource):
    """The Planet scene catalogue: a stac-geoparquet file served by rustac, or an external STAC API."""

    catalogue_path: str = Field(
        default_factory=default_catalogue_path,
        description="stac-geoparquet file served on loopback by rustac (ignored when api_url is set).",
    )
    api_url: str = Field(default="", description="URL of an external STAC API to search instead.")
    bbox: list[float] | None = Field(default=None, description="lon/lat search box (west, south, east, north).")
    datetime: str | None = Field(default=None, description="RFC 3339 interval, e.g. 2018-01-01/2023-12-31.")
    collections: list[str] = Field(default_factory=list)
    max_cloud_cover: float | None = Field(default=None, description="Maximum eo:cloud_cover in percent.")
    page_size: int = 100
    timeout_s: float = Field(default=5.0, description="Per-request timeout (connect and read) in seconds.")
    max_retries: int = Field(default=2, description="Retries of a failed request (exponential backoff).")

    _url: str | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[StacCatalogue]:
        with self.serving() as url:
            self._url = url
            yield self

    @contextmanager
    def serving(self) -> Iterator[str | None]:
        """Yield the URL of the API (starting rustac if needed), or None while the catalogue is empty."""
        if self.api_url:
            yield self.api_url
        elif Path(self.catalogue_path).exists():
            with serve_stac_geoparquet(Path(self.catalogue_path)) as url:
                yield url
        else:
            yield None

    def search(self) -> StacSearch | None:
        """The configured search, or None when there is no catalogue yet. Use inside a run or tick."""
        if self._url is None:
            return None
        return StacSearch(
            self._url,
            identity=self.api_url or self.catalogue_path,
            bbox=self.bbox,
            datetime=self.datetime,
            collections=self.collections,
            max_cloud_cover=self.max_cloud_cover,
            page_size=self.page_size,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        )
