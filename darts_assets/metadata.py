"""Small helpers for asset metadata shown in the Dagster UI."""

from __future__ import annotations

import base64

from dagster import MetadataValue


def png_markdown(png: bytes, caption: str) -> MetadataValue:
    """An inline PNG (data URI) as markdown metadata, so the picture shows on the asset page."""
    encoded = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")
