"""Demo region, part 1: grids, terrain and where features sit (pure numpy/shapely, no file I/O).

Everything is in the region's UTM CRS. The terrain is a plateau (~420-440 m) cut by one meandering
river valley (~85 m deep, steep sides) and a few thermokarst lakes with steep shores; rock outcrops sit
on small knolls, sediment-laden ponds in shallow plateau depressions, a gravel road crosses the plateau.
Slumps sit on steep slopes next to water and grow upslope by headwall retreat; ALD strips run downslope
on valley sides.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

YEARS = (2018, 2021, 2022, 2023)
WORK_RES = 5.0  # m, the internal terrain grid
WORK_MARGIN = 600.0  # m around the region, so the DEM/TCVIS/land cover can cover region + margin
PLATEAU_M, RIVER_Z0 = 432.0, 338.0
FLOOR_HALF_WIDTH, VALLEY_SIDE_WIDTH, RIVER_HALF_WIDTH = 70.0, 240.0, 14.0
LAKE_DEPTH, LAKE_SHORE_WIDTH = 24.0, 110.0
POND_DEPTH, POND_SHORE_WIDTH = 2.5, 30.0
ROAD_HALF_WIDTH = 4.5
MAX_RTS_EXTENT_M = 300.0
# land-cover classes (ESA WorldCover)
TREE, SHRUB, GRASS, BARE, WATER, WETLAND, MOSS = 10, 20, 30, 60, 80, 90, 100


def rng_for(seed: int, name: str) -> np.random.Generator:
    """An independent random stream per component, so one component's draws never shift another's."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-correlated noise with unit standard deviation (drawn coarse and upsampled: fast)."""
    step = max(1, int(sigma_px // 4))
    coarse_shape = (shape[0] // step + 3, shape[1] // step + 3)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma_px / step, mode="wrap")
    fine = ndimage.zoom(coarse, step, order=1)[: shape[0], : shape[1]] if step > 1 else coarse[: shape[0], : shape[1]]
    return ((fine - fine.mean()) / (fine.std() + 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: upper-left corner, square pixel size, shape."""

    left: float
    top: float
    res: float
    rows: int
    cols: int

    @classmethod
    def covering(cls, left: float, bottom: float, right: float, top: float, res: float) -> Grid:
        left, top = math.floor(left / res) * res, math.ceil(top / res) * res
        return cls(left, top, res, math.ceil((top - bottom) / res - 1e-9), math.ceil((right - left) / res - 1e-9))

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.left, self.top - self.rows * self.res, self.left + self.cols * self.res, self.top

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        xs = self.left + (np.arange(self.cols) + 0.5) * self.res
        ys = self.top - (np.arange(self.rows) + 0.5) * self.res
        return np.meshgrid(xs, ys)

    def rasterize(self, shapes: list[tuple[BaseGeometry, float]], dtype: str = "uint8") -> np.ndarray:
        shapes = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
        if not shapes:
            return np.zeros((self.rows, self.cols), dtype)
        return features.rasterize(shapes, (self.rows, self.cols), transform=self.transform, dtype=dtype)

    def mask(self, geoms: list[BaseGeometry]) -> np.ndarray:
        return self.rasterize([(g, 1) for g in geoms]).astype(bool)

    def sample(self, array: np.ndarray, x: np.ndarray, y: np.ndarray, order: int = 1) -> np.ndarray:
        """Values of ``array`` (on this grid) at map coordinates, by spline interpolation."""
        cols = (np.asarray(x) - self.left) / self.res - 0.5
        rows = (self.top - np.asarray(y)) / self.res - 0.5
        return ndimage.map_coordinates(array, [rows, cols], order=order, mode="nearest")


def blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, wobble: float = 0.1) -> Polygon:
    """A lobate closed shape: a rotated ellipse with random low harmonics on its radius."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    radius = 1 + sum(rng.uniform(0, wobble) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    angle = rng.uniform(0, np.pi)
    u, v = rx * radius * np.cos(theta), ry * radius * np.sin(theta)
    x = cx + u * np.cos(angle) - v * np.sin(angle)
    y = cy + u * np.sin(angle) + v * np.cos(angle)
    return Polygon(np.column_stack([x, y])).buffer(0)


@dataclass(frozen=True)
class Layout:
    """The static landscape: water, traps and the two validation regions (UTM geometries)."""

    region: Polygon
    river_line: LineString
    river: Polygon
    lakes: tuple[Polygon, ...]
    ponds: tuple[Polygon, ...]
    knolls: tuple[tuple[float, float, float, float], ...]  # x, y, height m, sigma m
    outcrops: tuple[BaseGeometry, ...]
    road: Polygon
    west: Polygon
    east: Polygon

    @property
    def water(self) -> BaseGeometry:
        return unary_union([self.river, *self.lakes, *self.ponds])


def make_layout(seed: int, region: Polygon, observed: BaseGeometry, n_outcrops: int, n_ponds: int) -> Layout:
    """River, lakes (fixed arrangement, seeded jitter), then traps sampled on the flat plateau."""
    rng = rng_for(seed, "layout")
    x0, y0, x1, y1 = region.bounds
    width, height = x1 - x0, y1 - y0
    xs = np.arange(x0 - WORK_MARGIN - 50, x1 + WORK_MARGIN + 50, 10.0)
    phase, phase2 = rng.uniform(0, 2 * np.pi, 2)
    ys = y0 + 0.53 * height + 180 * np.sin(2 * np.pi * (xs - x0) / 3400 + phase) + 50 * np.sin(
        2 * np.pi * (xs - x0) / 1300 + phase2
    )
    river_line = LineString(np.column_stack([xs, ys]))
    lakes = tuple(
        blob(rng, x0 + fx * width + rng.uniform(-60, 60), y0 + fy * height + rng.uniform(-30, 30), rx, ry, 0.06)
        for fx, fy, rx, ry in ((0.22, 0.25, 400, 220), (0.76, 0.24, 320, 230), (0.78, 0.88, 280, 180))
    )
    road_x = np.arange(x0 - WORK_MARGIN, x1 + WORK_MARGIN + 1, 20.0)
    road_y = y0 + 0.74 * height + 40 * np.sin(2 * np.pi * (road_x - x0) / 2600 + rng.uniform(0, 2 * np.pi))
    road_line = LineString(np.column_stack([road_x, road_y]))

    def on_flat_plateau(p: Point, taken: list[Point]) -> bool:
        return (
            observed.contains(p.buffer(120))
            and river_line.distance(p) > FLOOR_HALF_WIDTH + VALLEY_SIDE_WIDTH + 90
            and all(lake.distance(p) > LAKE_SHORE_WIDTH + 80 for lake in lakes)
            and road_line.distance(p) > 70
            and all(t.distance(p) > 220 for t in taken)
        )

    sites: list[Point] = []
    for _ in range(4000):
        if len(sites) == n_outcrops + n_ponds:
            break
        p = Point(rng.uniform(x0, x1), rng.uniform(y0, y1))
        if on_flat_plateau(p, sites):
            sites.append(p)
    knolls = tuple((p.x, p.y, rng.uniform(6, 10), rng.uniform(60, 90)) for p in sites[:n_outcrops])
    outcrops = tuple(
        unary_union([blob(rng, p.x + dx, p.y + dy, rng.uniform(14, 34), rng.uniform(10, 24), 0.2)
                     for dx, dy in rng.uniform(-25, 25, (int(rng.integers(1, 4)), 2))])
        for p in sites[:n_outcrops]
    )
    ponds = tuple(blob(rng, p.x, p.y, rng.uniform(20, 34), rng.uniform(16, 26), 0.12) for p in sites[n_outcrops:])
    mid = x0 + width / 2
    return Layout(
        region=region,
        river_line=river_line,
        river=river_line.buffer(RIVER_HALF_WIDTH),
        lakes=lakes,
        ponds=ponds,
        knolls=knolls,
        outcrops=outcrops,
        road=road_line.buffer(ROAD_HALF_WIDTH, cap_style="flat"),
        west=box(x0, y0, mid, y1),
        east=box(mid, y0, x1, y1),
    )


@dataclass(frozen=True)
class Terrain:
    """Fields on the work grid: elevation, slope, upslope direction, distances to water, land cover, NDVI."""

    grid: Grid
    dem: np.ndarray
    slope: np.ndarray  # degrees
    up_x: np.ndarray  # unit vector pointing upslope (smoothed)
    up_y: np.ndarray
    dist_lake: np.ndarray  # m to the nearest lake
    dist_river: np.ndarray  # m to the river channel
    landcover: np.ndarray  # WorldCover classes without the disturbances
    ndvi: np.ndarray  # summer NDVI of the vegetation


def _distance(mask: np.ndarray, res: float, **kwargs):
    return ndimage.distance_transform_edt(~mask, sampling=res, **kwargs)


def build_terrain(seed: int, layout: Layout) -> Terrain:
    """Carve valley, lake basins and ponds into a noisy plateau with knolls; derive slope and cover."""
    rng = rng_for(seed, "terrain")
    x0, y0, x1, y1 = layout.region.bounds
    grid = Grid.covering(x0 - WORK_MARGIN, y0 - WORK_MARGIN, x1 + WORK_MARGIN, y1 + WORK_MARGIN, WORK_RES)
    xx, yy = grid.centers()
    plateau = PLATEAU_M - 0.002 * (xx - x0) + 6 * smooth_noise(rng, xx.shape, 60)
    for kx, ky, height, sigma in layout.knolls:
        plateau += height * np.exp(-((xx - kx) ** 2 + (yy - ky) ** 2) / (2 * sigma**2))
    river_level = RIVER_Z0 - 0.002 * (xx - x0)
    dist_axis = _distance(grid.mask([layout.river_line.buffer(WORK_RES)]), WORK_RES)
    dem = river_level + (plateau - river_level) * smoothstep((dist_axis - FLOOR_HALF_WIDTH) / VALLEY_SIDE_WIDTH)

    lake_ids = grid.rasterize([(lake, i + 1) for i, lake in enumerate(layout.lakes)])
    levels = np.array([0.0] + [plateau[lake_ids == i + 1].mean() - LAKE_DEPTH for i in range(len(layout.lakes))])
    dist_lake, (near_r, near_c) = _distance(lake_ids > 0, WORK_RES, return_indices=True)
    level = levels[lake_ids[near_r, near_c]]
    dem = np.minimum(dem, level + (dem - level) * smoothstep(dist_lake / LAKE_SHORE_WIDTH))
    pond_mask = grid.mask(list(layout.ponds))
    dem -= POND_DEPTH * (1 - smoothstep(_distance(pond_mask, WORK_RES) / POND_SHORE_WIDTH))
    dem = ndimage.gaussian_filter(dem, 1.0) + 0.3 * smooth_noise(rng, dem.shape, 1.5)

    gy, gx = np.gradient(ndimage.gaussian_filter(dem, 1.0), WORK_RES)
    gy = -gy  # rows run south
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    sgx, sgy = ndimage.gaussian_filter(gx, 4), ndimage.gaussian_filter(gy, 4)
    norm = np.hypot(sgx, sgy) + 1e-9
    dist_river = _distance(grid.mask([layout.river]), WORK_RES)
    landcover, ndvi = _vegetation(rng, grid, layout, dist_axis)
    return Terrain(grid, dem.astype(np.float32), slope.astype(np.float32), sgx / norm, sgy / norm,
                   dist_lake.astype(np.float32), dist_river.astype(np.float32), landcover, ndvi)


def _vegetation(rng: np.random.Generator, grid: Grid, layout: Layout, dist_axis: np.ndarray):
    """WorldCover-like classes and a smooth summer NDVI field (0.5-0.8) that follows them."""
    cover_noise = smooth_noise(rng, (grid.rows, grid.cols), 40)
    landcover = np.select(
        [dist_axis < FLOOR_HALF_WIDTH + 20, dist_axis < FLOOR_HALF_WIDTH + 0.8 * VALLEY_SIDE_WIDTH,
         cover_noise > 0.9, cover_noise < -0.6, cover_noise > 0.3],
        [TREE, SHRUB, WETLAND, MOSS, GRASS], default=SHRUB,
    ).astype(np.uint8)
    base = {TREE: 0.76, SHRUB: 0.71, GRASS: 0.63, WETLAND: 0.66, MOSS: 0.56}
    ndvi = np.zeros(landcover.shape, np.float32)
    for cls, value in base.items():
        ndvi[landcover == cls] = value
    ndvi = ndimage.gaussian_filter(ndvi, 3) + 0.035 * smooth_noise(rng, ndvi.shape, 20)
    ndvi += 0.02 * smooth_noise(rng, ndvi.shape, 3)
    landcover[grid.mask([*layout.outcrops, layout.road])] = BARE
    landcover[grid.mask([layout.water])] = WATER
    return landcover, np.clip(ndvi, 0.5, 0.82).astype(np.float32)


# ----------------------------------------------------------------------------------------- disturbances


@dataclass(frozen=True)
class Slump:
    """A retrogressive thaw slump: a lobate scar whose arcuate headwall retreats upslope year by year.

    The scar of a year is the final scar cut by a disk around ``center`` (a point a little upslope of the
    toe) whose radius grows each year: footprints are nested and each year's new area lies upslope.
    """

    feature_id: str
    center: tuple[float, float]
    scar: Polygon  # the full scar at its final (last-year) extent
    lobe: BaseGeometry  # mud-flow lobe and debris fan from the toe toward the water
    final_radius: float
    retreat_m_per_year: float
    start_year: int

    def radius(self, year: int) -> float:
        return self.final_radius - self.retreat_m_per_year * (YEARS[-1] - year)

    def scar_in(self, year: int) -> BaseGeometry:
        return self.scar.intersection(Point(self.center).buffer(self.radius(year), 64))

    def footprint(self, year: int) -> BaseGeometry | None:
        """The scar of ``year`` plus the lobe, or None before the slump started."""
        if year < self.start_year:
            return None
        return unary_union([self.scar_in(year), self.lobe])

    def headwall(self, year: int) -> BaseGeometry:
        """The scarp: the scar's upslope rim (shaded, dark in the imagery)."""
        r, scar = self.radius(year), self.scar_in(year)
        rim = scar.difference(scar.buffer(-6))
        return rim.difference(Point(self.center).buffer(0.8 * r, 64))


@dataclass(frozen=True)
class Ald:
    """An active-layer detachment slide: a narrow downslope strip, bare at onset, then revegetating."""

    feature_id: str
    strip: Polygon
    onset_year: int

    def bare_fraction(self, year: int) -> float:
        if year < self.onset_year:
            return 0.0
        return (1.0, 0.55, 0.3)[min(year - self.onset_year, 2)]


def _slump_scar(rng: np.random.Generator, toe: np.ndarray, up: np.ndarray, length: float, width: float) -> Polygon:
    """Pear-shaped lobate scar from the toe (narrow) to an amphitheatre headwall at ``length`` upslope."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (3, 4, 6))
    u = 0.5 * length * (1 + wobble * np.cos(theta))
    v = 0.5 * width * wobble * np.sin(theta) * (0.4 + 0.6 * np.sqrt(np.clip(u / length, 0, 1)))
    x = toe[0] + u * up[0] - v * up[1]
    y = toe[1] + u * up[1] + v * up[0]
    return Polygon(np.column_stack([x, y])).buffer(0)


class _Sampler:
    """Terrain look-ups at map points and the shared rule that features keep clear of one another."""

    def __init__(self, terrain: Terrain, layout: Layout, observed: BaseGeometry):
        self.t, self.layout, self.observed = terrain, layout, observed
        self.water = layout.water
        self.taken: list[BaseGeometry] = [*layout.outcrops, *layout.ponds, layout.road]

    def at(self, field: np.ndarray, p: np.ndarray) -> float:
        return float(self.t.grid.sample(field, [p[0]], [p[1]], order=1)[0])

    def up(self, p: np.ndarray) -> np.ndarray:
        v = np.array([self.at(self.t.up_x, p), self.at(self.t.up_y, p)])
        return v / (np.linalg.norm(v) + 1e-9)

    def dist_water(self, p: np.ndarray) -> float:
        return min(self.at(self.t.dist_lake, p), self.at(self.t.dist_river, p))

    def mean_slope(self, geom: BaseGeometry) -> float:
        grid = self.t.grid
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = int((x0 - grid.left) // grid.res), int((grid.top - y1) // grid.res)
        window = Grid(grid.left + c0 * grid.res, grid.top - r0 * grid.res, grid.res,
                      int((y1 - y0) // grid.res) + 2, int((x1 - x0) // grid.res) + 2)
        inside = window.mask([geom])
        slope = self.t.slope[r0 : r0 + window.rows, c0 : c0 + window.cols]
        return float(slope[inside].mean()) if inside.any() else 0.0

    def is_free(self, geom: BaseGeometry, clearance: float = 40.0) -> bool:
        return self.observed.contains(geom) and all(geom.distance(g) > clearance for g in self.taken)

    def candidates(self, condition: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        xx, yy = self.t.grid.centers()
        inside = self.t.grid.mask([self.observed.buffer(-60)])
        points = np.column_stack([xx[condition & inside], yy[condition & inside]])
        return points[rng.permutation(len(points))]


def _walk(s: _Sampler, start: np.ndarray, step: np.ndarray, stop, max_steps: int) -> np.ndarray:
    """Step from ``start`` by ``step`` until ``stop(point)`` holds (or ``max_steps`` are taken)."""
    p = start.copy()
    for _ in range(max_steps):
        if stop(p):
            break
        p = p + step
    return p


def _try_slump(
    s: _Sampler, rng: np.random.Generator, anchor: np.ndarray, fid: str, start: int, area: BaseGeometry
) -> Slump | None:
    """A slump from the foot of the slope below ``anchor``, sized to the slope, or None if it does not fit."""
    up = s.up(anchor)
    toe = _walk(s, anchor, -5 * up, lambda p: s.at(s.t.slope, p) < 7 or s.dist_water(p) < 25, 60)
    lobe_end = _walk(s, toe, -5 * up, lambda p: s.dist_water(p) < 3, 24)
    crest = _walk(s, toe + 20 * up, 5 * up, lambda p: s.at(s.t.slope, p) < 4, 60)
    length = float(np.clip(np.linalg.norm(crest - toe) * rng.uniform(0.8, 1.25), 110, 250))
    rise = s.at(s.t.dem, toe + length * up) - s.at(s.t.dem, toe)
    upper_rise = s.at(s.t.dem, toe + length * up) - s.at(s.t.dem, toe + 0.5 * length * up)
    if rise < 12 or upper_rise < 4:  # the headwall must cut into the slope, not run out onto the plateau
        return None
    width = length * rng.uniform(0.55, 0.95)
    scar = _slump_scar(rng, toe, up, length, width)
    fan = Point(lobe_end + 0.1 * width * up).buffer(0.22 * width)
    lobe = LineString([toe + 0.1 * length * up, lobe_end]).buffer(0.14 * width).union(fan).difference(s.water)
    if lobe.geom_type != "Polygon":
        return None
    whole = scar.union(lobe)
    x0, y0, x1, y1 = whole.bounds
    ok = (
        max(x1 - x0, y1 - y0) <= MAX_RTS_EXTENT_M
        and area.contains(whole)
        and s.is_free(whole, clearance=90)
        and scar.distance(s.water) > 4
        and s.mean_slope(scar) >= 7
    )
    if not ok:
        return None
    center = toe + 0.2 * length * up
    final_radius = float(np.max(np.hypot(*(np.asarray(scar.exterior.coords) - center).T))) + 1
    rate = min(rng.uniform(8, 18), (final_radius - 0.35 * length) / (YEARS[-1] - YEARS[0]))
    return Slump(fid, (float(center[0]), float(center[1])), scar, lobe, final_radius, rate, start)


def _try_ald(s: _Sampler, rng: np.random.Generator, anchor: np.ndarray, fid: str, onset: int) -> Ald | None:
    up = s.up(anchor)
    length, width = rng.uniform(120, 220), rng.uniform(16, 28)
    strip = LineString([anchor + 0.5 * length * up, anchor - 0.5 * length * up]).buffer(width / 2)
    ok = s.is_free(strip) and strip.distance(s.water) > 10 and s.mean_slope(strip) >= 12
    return Ald(fid, strip, onset) if ok else None


def place_disturbances(
    seed: int, terrain: Terrain, layout: Layout, observed: BaseGeometry, n_rts: int, n_ald: int
) -> tuple[tuple[Slump, ...], tuple[Ald, ...]]:
    """Slumps alternately on lake shores and valley sides, ALD on steep valley sides, none overlapping."""
    rng = rng_for(seed, "disturbances")
    s = _Sampler(terrain, layout, observed)
    t = terrain
    near_water = np.minimum(t.dist_lake, t.dist_river) < 160
    west = t.grid.mask([layout.west])
    pools = {
        (kind, side): s.candidates(condition & (west if side == "west" else ~west), rng)
        for kind, condition in (
            ("lake", (t.slope > 12) & near_water & (t.dist_lake < t.dist_river)),
            ("river", (t.slope > 14) & near_water & (t.dist_river < t.dist_lake)),
        )
        for side in ("west", "east")
    }
    pools["ald"] = s.candidates((t.slope > 18) & (t.dist_river > 60) & (t.dist_river < 260), rng)
    cursor = dict.fromkeys(pools, 0)

    def place(pool, build) -> BaseGeometry | None:
        while cursor[pool] < min(len(pools[pool]), 3000):
            anchor = pools[pool][cursor[pool]]
            cursor[pool] += 1
            if (feature := build(anchor)) is not None:
                return feature
        return None

    slumps: list[Slump] = []
    for i in range(n_rts):  # alternate west/east (both validation regions get slumps) and lake/river
        side, other = ("west", "east") if i % 2 == 0 else ("east", "west")
        kinds = ("lake", "river") if (i // 2) % 2 == 0 else ("river", "lake")
        start = YEARS[1] if i == n_rts - 1 else YEARS[0]  # one slump is new in 2021
        for pool in [(k, side) for k in kinds] + [(k, other) for k in kinds]:
            area = observed.intersection(layout.west if pool[1] == "west" else layout.east)
            slump = place(pool, lambda a, i=i, st=start, ar=area: _try_slump(s, rng, a, f"rts_{i + 1:02d}", st, ar))
            if slump is not None:
                slumps.append(slump)
                s.taken.append(slump.scar.union(slump.lobe))
                break
    alds: list[Ald] = []
    for i in range(n_ald):
        onset = YEARS[1] if i == 0 else YEARS[2]
        ald = place("ald", lambda a, i=i, o=onset: _try_ald(s, rng, a, f"ald_{i + 1:02d}", o))
        if ald is not None:
            alds.append(ald)
            s.taken.append(ald.strip)
    return tuple(slumps), tuple(alds)


def truth_records(layout: Layout, slumps: tuple[Slump, ...], alds: tuple[Ald, ...]) -> list[dict]:
    """One row per feature and year: feature_id, kind, year, active (a labeller would map it), geometry."""
    static = [("river_01", "river", layout.river), ("road_01", "road", layout.road)]
    static += [(f"lake_{i + 1:02d}", "lake", g) for i, g in enumerate(layout.lakes)]
    static += [(f"rock_{i + 1:02d}", "rock_outcrop", g) for i, g in enumerate(layout.outcrops)]
    static += [(f"pond_{i + 1:02d}", "sediment_pond", g) for i, g in enumerate(layout.ponds)]
    rows = []
    for year in YEARS:
        for slump in slumps:
            if (footprint := slump.footprint(year)) is not None:
                rows.append(dict(feature_id=slump.feature_id, kind="rts", year=year, active=True, geometry=footprint))
        for ald in alds:
            if (bare := ald.bare_fraction(year)) > 0:
                rows.append(dict(feature_id=ald.feature_id, kind="ald", year=year, active=bare >= 0.5,
                                 geometry=ald.strip))
        rows += [dict(feature_id=f, kind=k, year=year, active=False, geometry=g) for f, k, g in static]
    return rows
