"""A static STAC 1.1 catalogue of the product files: ``products/catalog.json`` and one item per product.

Each item (id = the product name) has two assets, the GeoParquet and the GeoPackage file (relative hrefs, so
the folder can be copied or uploaded as it is), the table extension (columns with their Arrow types, row count,
primary geometry) and the projection extension (``proj:code`` EPSG:4326). Geometry and bbox: the bounding box
of the features (none for an empty product); time: ``start_datetime``/``end_datetime`` of the product's years.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import shapely

from darts_core.atomic import atomic_path

STAC_VERSION = "1.1.0"
TABLE_SCHEMA = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CATALOGUE_FILE = "catalog.json"
MEDIA_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".gpkg": "application/geopackage+sqlite3",
}


@dataclass(frozen=True)
class ProductFile:
    """One published product: its name, the years of its period and its GeoParquet file."""

    name: str
    years: tuple[int, int]
    parquet: Path
    description: str


def table_columns(parquet: Path) -> list[dict[str, str]]:
    schema = pq.read_schema(parquet)
    return [{"name": field.name, "type": str(field.type)} for field in schema if field.name != "bbox"]


def feature_bbox(parquet: Path) -> list[float] | None:
    """Bounding box of the features from the GeoParquet bbox covering column (None when there are none)."""
    table = pq.read_table(parquet, columns=["bbox"])
    if table.num_rows == 0:
        return None
    boxes = table.column("bbox").combine_chunks()

    def finite(name: str) -> list[float]:  # empty geometries have NaN (or null) boxes
        return [value for value in boxes.field(name).to_pylist() if value is not None and math.isfinite(value)]

    if not finite("xmin"):
        return None
    return [min(finite("xmin")), min(finite("ymin")), max(finite("xmax")), max(finite("ymax"))]


def product_item(product: ProductFile) -> dict:
    """The STAC item of one product (hrefs relative to the products folder)."""
    bbox = feature_bbox(product.parquet)
    geometry = shapely.geometry.mapping(shapely.box(*bbox)) if bbox else None
    first, last = product.years
    assets = {
        suffix.lstrip("."): {
            "href": f"./{product.name}{suffix}",
            "type": media_type,
            "roles": ["data"],
            "title": f"{product.name}{suffix}",
        }
        for suffix, media_type in MEDIA_TYPES.items()
    }
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [TABLE_SCHEMA, PROJECTION_SCHEMA],
        "id": product.name,
        "geometry": geometry,
        "properties": {
            "title": product.name,
            "description": product.description,
            "datetime": None,
            "start_datetime": f"{first}-01-01T00:00:00Z",
            "end_datetime": f"{last}-12-31T23:59:59Z",
            "table:columns": table_columns(product.parquet),
            "table:row_count": pq.ParquetFile(product.parquet).metadata.num_rows,
            "table:primary_geometry": "geometry",
            "proj:code": "EPSG:4326",
        },
        "links": [
            {"rel": "root", "href": f"./{CATALOGUE_FILE}", "type": "application/json"},
            {"rel": "parent", "href": f"./{CATALOGUE_FILE}", "type": "application/json"},
        ],
        "assets": assets,
    }
    if bbox:
        item["bbox"] = bbox
    return item


def catalogue(dataset: str, version: str, product_ids: Iterable[str]) -> dict:
    links = [{"rel": "root", "href": f"./{CATALOGUE_FILE}", "type": "application/json"}]
    links += [{"rel": "item", "href": f"./{name}.json", "type": "application/geo+json"} for name in product_ids]
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": f"{dataset.lower()}-products",
        "title": f"{dataset} {version} products",
        "description": f"{dataset} {version}: Level-1/Level-2 RTS/ALD features and coverage (GeoParquet, GeoPackage).",
        "links": links,
    }


def write_json(document: dict, path: Path) -> None:
    with atomic_path(path) as temp_path:
        temp_path.write_text(json.dumps(document, indent=2) + "\n")


def write_products_catalogue(folder: Path, dataset: str, version: str, products: list[ProductFile]) -> Path:
    """Write one item per product and the catalogue into ``folder``; returns the catalogue path."""
    for product in products:
        write_json(product_item(product), folder / f"{product.name}.json")
    path = folder / CATALOGUE_FILE
    write_json(catalogue(dataset, version, [product.name for product in products]), path)
    return path
