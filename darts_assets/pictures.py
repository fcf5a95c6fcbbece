"""Pictures for asset metadata: the Level-2 map and the H3 affected-area grid (PNG, matplotlib Agg)."""

from __future__ import annotations

import io

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from darts_core.params import ProductParams  # noqa: E402

MAX_PANELS = 6
DPI = 110


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _panels(years: list[int]) -> tuple[Figure, list]:
    shown = years[-MAX_PANELS:]
    figure, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.6 * max(len(shown), 1), 3.8), squeeze=False)
    return figure, list(zip(shown, axes[0], strict=False)) or [(None, axes[0][0])]


def level2_map_png(level2: gpd.GeoDataFrame, coverage: gpd.GeoDataFrame, params: ProductParams) -> bytes:
    """One panel per year (latest ``MAX_PANELS``): that year's coverage in grey, its Level-2 features in red."""
    level2, coverage = level2.to_crs(params.equal_area_crs), coverage.to_crs(params.equal_area_crs)
    years = sorted({int(year) for year in coverage["year"]} | {int(year) for year in level2["year"]})
    figure, panels = _panels(years)
    for year, axis in panels:
        if year is not None:
            coverage[coverage["year"] == year].plot(ax=axis, color="0.85", edgecolor="0.6", linewidth=0.5)
            features = level2[level2["year"] == year]
            if len(features):
                features.plot(ax=axis, color="tab:red", edgecolor="darkred", linewidth=0.4)
            axis.set_title(f"{year}: {len(features)} features, {features.area.sum() / 1e4:.1f} ha", fontsize=9)
        axis.set_axis_off()
        axis.set_aspect("equal")
    figure.suptitle(f"Level-2 RTS/ALD features ({params.equal_area_crs})", fontsize=10)
    return figure_png(figure)


def h3_grid_png(cells: gpd.GeoDataFrame, params: ProductParams) -> bytes:
    """One panel per year: H3 cells coloured by ``affected_pct`` (share of the covered area that is RTS/ALD)."""
    cells = cells.to_crs(params.equal_area_crs)
    years = sorted({int(year) for year in cells["year"]})
    figure, panels = _panels(years)
    top = max(float(cells["affected_pct"].max()), 1e-6) if len(cells) else 1.0
    for year, axis in panels:
        if year is not None:
            cells[cells["year"] == year].plot(
                ax=axis, column="affected_pct", cmap="viridis", vmin=0.0, vmax=top, edgecolor="white", linewidth=0.6
            )
            axis.set_title(f"{year}", fontsize=9)
        axis.set_axis_off()
        axis.set_aspect("equal")
    mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0.0, top))
    figure.colorbar(mappable, ax=[axis for _, axis in panels], shrink=0.7, label="affected area (% of covered)")
    figure.suptitle("H3 level-4 cells: RTS/ALD share of the covered area", fontsize=10)
    return figure_png(figure)


def grouped_bars_png(frame, category: str, values: list[str], title: str, ylabel: str) -> bytes:
    """One group of bars per ``category`` value, one bar per column of ``values``."""
    figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(frame) + 2), 3.4))
    width = 0.8 / max(len(values), 1)
    for index, column in enumerate(values):
        positions = [position + index * width for position in range(len(frame))]
        axis.bar(positions, frame[column].astype(float), width=width, label=column)
    axis.set_xticks([position + 0.4 - width / 2 for position in range(len(frame))])
    axis.set_xticklabels([str(label) for label in frame[category]], fontsize=8, rotation=20)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    return figure_png(figure)


def curves_png(frame, x: str, y: str, group: str, title: str) -> bytes:
    """``y`` over ``x``, one line per ``group`` value."""
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for name, rows in frame.groupby(group, sort=True):
        axis.plot(rows[x], rows[y], marker="o", label=str(name))
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    return figure_png(figure)
