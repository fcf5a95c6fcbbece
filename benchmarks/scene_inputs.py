"""Per-scene input chain on one demo scene, step by step, plus side-by-side comparisons.

    uv run python benchmarks/scene_inputs.py [--scene ID] [--repeat N]

Prints: the time of each step of the chain (ingestion, terrain, TCVIS, water, stack, GeoTIFF write) for
one demo scene; the disk mean (relative elevation) by FFT against a naive convolution at 2 m and 10 m
DEM resolution; GeoTIFF write time of the stack with deflate against zstd.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from darts_core.demo_region import synthesise_demo_region
from darts_core.params import StackParams, TerrainParams
from darts_core.planet import read_planet_assets
from darts_core.planet_catalogue import find_planet_assets
from darts_core.rasters import Grid, write_geotiff
from darts_core.stack import build_input_stack, write_stack_geotiff
from darts_core.terrain import disk_kernel, disk_mean
from resources.aux_sources import LocalMosaicSource


def best_of(repeat: int, step: Callable[[], object]) -> tuple[float, object]:
    """Minimum wall time over ``repeat`` runs (the least disturbed one on a shared machine) and the result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - started)
    return min(times), result


def chain_steps(region, scene_id: str, repeat: int, out: Path) -> None:
    scene_folder = next(scene.folder for scene in region.scenes if scene.item_id == scene_id)
    aux = LocalMosaicSource(
        dem_path=str(region.dem_vrt), tcvis_path=str(region.tcvis), landcover_path=str(region.landcover)
    )
    seconds, scene = best_of(repeat, lambda: read_planet_assets(find_planet_assets(scene_folder)))
    grid = Grid(scene.crs, scene.transform, scene.width, scene.height)
    rows = [("ingestion (SR, udm2, footprint)", seconds)]
    seconds, (relative_elevation, slope) = best_of(repeat, lambda: aux.terrain(grid, TerrainParams()))
    rows.append(("terrain (rel. elevation + slope)", seconds))
    seconds, tcvis = best_of(repeat, lambda: aux.tcvis(grid))
    rows.append(("TCVIS", seconds))
    rows.append(("water mask", best_of(repeat, lambda: aux.water_mask(grid))[0]))
    seconds, stack = best_of(repeat, lambda: build_input_stack(scene, relative_elevation, slope, tcvis))
    rows.append(("stack (normalise, mask)", seconds))
    rows.append(
        (
            "stack GeoTIFF write",
            best_of(repeat, lambda: write_stack_geotiff(out / "s.tif", stack, scene.crs, scene.transform))[0],
        )
    )
    print(f"\nPer-scene input chain, scene {scene_id} ({scene.width} x {scene.height} px), best of {repeat}:")
    for label, value in rows:
        print(f"  {label:<34} {value * 1000:8.1f} ms")
    print(f"  {'total':<34} {sum(v for _, v in rows) * 1000:8.1f} ms")


def naive_disk_mean(dem: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The direct convolution (cost grows with the disk area), normalised at the edges like disk_mean."""
    weights = kernel / kernel.sum()
    total = ndimage.convolve(dem, weights, mode="constant", cval=0.0)
    return total / ndimage.convolve(np.ones_like(dem), weights, mode="constant", cval=0.0)


def disk_mean_comparison(repeat: int) -> None:
    rng = np.random.default_rng(0)
    dem = ndimage.gaussian_filter(rng.standard_normal((1000, 1000)), 20).astype(np.float64) * 50 + 300
    radius_m = TerrainParams().tpi_radius_m
    print(f"\nDisk mean, radius {radius_m:.0f} m, 1000 x 1000 DEM, best of {repeat}:")
    print(f"  {'pixel':>6} {'disk px':>8} {'FFT s':>8} {'naive s':>8} {'speed-up':>9} {'max |diff|':>11}")
    for pixel_m in (10.0, 2.0):
        radius_px = radius_m / pixel_m
        kernel = disk_kernel(radius_px)
        fft_s, fast = best_of(repeat, lambda radius=radius_px: disk_mean(dem, radius))
        naive_s, slow = best_of(1, lambda k=kernel: naive_disk_mean(dem, k))
        difference = float(np.nanmax(np.abs(fast - slow)))
        speed_up = naive_s / fft_s
        print(
            f"  {pixel_m:5.0f}m {int(kernel.sum()):8d} {fft_s:8.3f} {naive_s:8.2f} {speed_up:8.0f}x {difference:11.2e}"
        )


def compression_comparison(region, scene_id: str, repeat: int, out: Path) -> None:
    scene_folder = next(scene.folder for scene in region.scenes if scene.item_id == scene_id)
    scene = read_planet_assets(find_planet_assets(scene_folder))
    stack = np.concatenate([scene.reflectance, scene.ndvi[None]] * 2)  # 10 real bands
    grid = Grid(scene.crs, scene.transform, scene.width, scene.height)
    names = list(StackParams().bands)
    print(f"\nStack GeoTIFF write, {stack.shape}, best of {repeat}:")
    for label, options in (("zstd level 1 (default)", {}), ("deflate", {"compress": "deflate"})):
        path = out / f"{label.split()[0]}.tif"
        seconds, _ = best_of(
            repeat, lambda p=path, o=options: write_geotiff(p, stack, grid, names, profile_overrides=o)
        )
        print(f"  {label:<20} {seconds * 1000:8.1f} ms  {path.stat().st_size / 1e6:6.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="20220712_194511_03_2447")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        out = Path(temp)
        region = synthesise_demo_region(out / "demo_region")
        chain_steps(region, args.scene, args.repeat, out)
        compression_comparison(region, args.scene, args.repeat, out)
    disk_mean_comparison(args.repeat)


if __name__ == "__main__":
    main()
