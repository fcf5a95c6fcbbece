"""Small helpers for asset metadata shown in the Dagster UI."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from dagster import MetadataValue


def png_markdown(png: bytes, caption: str) -> MetadataValue:
    """An inline PNG (data URI) as markdown metadata, so the picture shows on the asset page."""
    encoded = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")


def markdown_table(rows: Sequence[Mapping[str, object]], float_format: str = ".4f") -> MetadataValue:
    """Rows of equal keys as a markdown table (floats formatted with ``float_format``)."""
    if not rows:
        return MetadataValue.md("(no rows)")
    columns = list(rows[0])

    def cell(value: object) -> str:
        return format(value, float_format) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[column]) for column in columns) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))
