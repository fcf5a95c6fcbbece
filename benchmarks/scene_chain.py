"""End-to-end per-scene chain on the CPU: wall time and peak memory of every step, for scenes of several sizes.

    uv run python benchmarks/scene_chain.py [--size 2048x2048 --size 4096x2048 ...] [--compare 2048x2048] [--repeat N]

A synthetic PSScene of each ``--size`` (width x height, 3 m pixels) with its DEM/TCVIS/land-cover mosaics is
written in the real formats (``synthetic_scene.py``); then the chain runs as the assets do, each step reading what
the previous one wrote: ingestion (SR, udm2, valid mask, footprint), terrain, TCVIS, water mask, input stack,
inference of the tcvis (10 bands) and notcvis (7 bands) models, ensemble, cleaning, polygons + Level 1. Every step
runs in a fresh process, as Dagster's multiprocess executor runs an asset, so its peak memory (``ru_maxrss``) is its
own; "above start" is that peak minus the process's size after its imports.

Models: the production architecture (UNet++/resnet34/depth 3) with random weights (``encoder_weights=None``), saved
as DARTS checkpoints and loaded through ``TorchDevice`` as the probability assets load them; 1024 px patches,
256 overlap, batch 8 (the production parameters).

``--compare SIZE`` runs both models on that scene's stack with the previous inference path (fp32, BatchNorm as
separate layers, batches of 8 patches per forward pass) and with the current one (``TorchDevice`` defaults: bf16
autocast where the CPU has native bf16, BatchNorm folded, one patch per forward pass), best of ``--repeat`` runs,
each setting in a fresh process, and prints time, peak memory and how far the outputs differ.
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from scipy import ndimage
from synthetic_scene import SyntheticScene, synthesise_scene

from darts_assets.training import VARIANT_BANDS
from darts_core.cleaning import clean_mask, ensemble_mean, polygonise
from darts_core.inference import predict_probabilities
from darts_core.level1 import level1_features, write_level1
from darts_core.model import build_model, checkpoint_config, load_checkpoint, save_checkpoint
from darts_core.params import (
    BAND_ORDER_NOTCVIS,
    BAND_ORDER_TCVIS,
    CleaningParams,
    InferenceParams,
    ModelParams,
    ProductParams,
    TerrainParams,
    TrainingParams,
    default_normalisation,
)
from darts_core.planet import read_metadata, read_planet_assets
from darts_core.planet_catalogue import find_planet_assets
from darts_core.rasters import Grid, bounded_gdal_cache, write_geotiff
from darts_core.stack import build_input_stack, write_stack_by_blocks, write_stack_geotiff
from resources.aux_sources import LocalMosaicSource
from resources.gpu import TorchDevice

MODEL_BANDS = VARIANT_BANDS  # as the model_checkpoint asset trains them
PERCENT_NODATA = 255
REFERENCE = {"seconds": 115.0, "peak_gb": 16.6}  # best public DARTS pipeline, 2048 x 2048 px, both models, 2 cores
MEMORY_BAR_GB = 4.0
CALIBRATION_SIZE = 1024
POSITIVE_SHARE = 0.03
CALIBRATION_MARGIN_PX = 32


@dataclass(frozen=True)
class ChainPaths:
    """The synthetic scene, the folder the steps write to and the model checkpoints."""

    scene: SyntheticScene
    work: Path
    checkpoints: dict[str, Path]

    def file(self, name: str) -> Path:
        return self.work / name


@dataclass(frozen=True)
class StepResult:
    """Wall time, peak memory (bytes) and the process size after imports (bytes) of one step; what it reports."""

    seconds: float
    peak_bytes: int
    start_bytes: int
    info: dict


# --- the steps (each runs in its own process) -------------------------------------------------------------


def aux_source(paths: ChainPaths) -> LocalMosaicSource:
    scene = paths.scene
    return LocalMosaicSource(dem_path=str(scene.dem), tcvis_path=str(scene.tcvis), landcover_path=str(scene.landcover))


def read_scene(paths: ChainPaths):
    return read_planet_assets(find_planet_assets(paths.scene.folder))


def read_bands(path: Path) -> np.ndarray:
    with rasterio.open(path) as source:
        return source.read()


def step_ingestion(paths: ChainPaths) -> dict:
    scene = read_scene(paths)
    grid = Grid(scene.crs, scene.transform, scene.width, scene.height)
    write_geotiff(paths.file("valid_mask.tif"), scene.valid.astype(np.uint8), grid, ["valid"])
    footprint = gpd.GeoDataFrame({"image_id": [scene.item_id]}, geometry=[scene.footprint], crs=scene.crs)
    footprint.to_crs("EPSG:4326").to_parquet(paths.file("footprint.parquet"), schema_version="1.1.0")
    return {"valid_fraction": round(scene.valid_fraction, 3)}


def step_terrain(paths: ChainPaths) -> dict:
    grid = Grid.from_raster(str(paths.file("valid_mask.tif")))
    relative_elevation, slope = aux_source(paths).terrain(grid, TerrainParams())
    layers = np.stack([relative_elevation, slope])
    write_geotiff(paths.file("terrain.tif"), layers, grid, ["relative_elevation", "slope"], nodata=np.nan)
    return {}


def step_tcvis(paths: ChainPaths) -> dict:
    grid = Grid.from_raster(str(paths.file("valid_mask.tif")))
    tcvis = aux_source(paths).tcvis(grid)
    write_geotiff(paths.file("tcvis.tif"), tcvis, grid, ["tc_brightness", "tc_greenness", "tc_wetness"])
    return {}


def step_water(paths: ChainPaths) -> dict:
    grid = Grid.from_raster(str(paths.file("valid_mask.tif")))
    water = aux_source(paths).water_mask(grid)
    write_geotiff(paths.file("water_mask.tif"), water.astype(np.uint8), grid, ["water"])
    return {"water_fraction": round(float(water.mean()), 3)}


def step_stack(paths: ChainPaths) -> dict:
    """As the ``input_stack`` asset: built and written block by block of rows."""
    assets = find_planet_assets(paths.scene.folder)
    terrain, tcvis, stack = paths.file("terrain.tif"), paths.file("tcvis.tif"), paths.file("input_stack.tif")
    return {"valid_fraction": round(write_stack_by_blocks(assets, terrain, tcvis, stack), 3)}


def step_stack_whole(paths: ChainPaths) -> dict:
    """The previous ``input_stack``: the whole scene read, stacked in memory, then written."""
    scene = read_scene(paths)
    relative_elevation, slope = read_bands(paths.file("terrain.tif"))
    stack = build_input_stack(scene, relative_elevation, slope, read_bands(paths.file("tcvis.tif")))
    write_stack_geotiff(paths.file("input_stack.tif"), stack, scene.crs, scene.transform)
    return {}


def load_previous(checkpoint: Path) -> torch.nn.Module:
    """The model as the previous inference path prepared it: eval mode, channels-last, nothing folded."""
    model, _ = load_checkpoint(checkpoint)
    return model.eval().to(memory_format=torch.channels_last)


def predict(paths: ChainPaths, variant: str, current: bool, read_ahead: bool = False) -> tuple[np.ndarray, float]:
    """Probabilities of one model over the stack (read window by window, as the asset does) and the seconds."""
    bands = len(MODEL_BANDS[variant])
    return predict_stack(paths.file("input_stack.tif"), paths.checkpoints[variant], bands, current, read_ahead)


def predict_stack(
    stack_path: Path, checkpoint: Path, bands: int, current: bool, read_ahead: bool = False
) -> tuple[np.ndarray, float]:
    """Probabilities over the first ``bands`` bands of a stack with the current or the previous inference path
    (which read no patch ahead)."""
    device = TorchDevice(device="cpu")
    if current:
        model, _ = device.load_model(checkpoint)
        dtype, batch_size = device.autocast_dtype(), device.batch_size
    else:
        model, dtype, batch_size = load_previous(checkpoint), None, InferenceParams().batch_size
    indexes = list(range(1, bands + 1))
    started = time.perf_counter()
    with bounded_gdal_cache(), rasterio.open(stack_path) as stack:

        def read_window(row: int, col: int, rows: int, cols: int) -> np.ndarray:
            window = rasterio.windows.Window(col, row, cols, rows)
            return stack.read(indexes, window=window).astype(np.float32, copy=False)

        result = predict_probabilities(
            read_window,
            stack.height,
            stack.width,
            model,
            InferenceParams(),
            "cpu",
            dtype,
            True,
            batch_size,
            read_ahead=current and read_ahead,
        )
    return result.probabilities, time.perf_counter() - started


def write_percent(paths: ChainPaths, name: str, probability: np.ndarray) -> None:
    valid = read_bands(paths.file("valid_mask.tif"))[0].astype(bool)
    percent = np.rint(probability * 100).astype(np.uint8)
    percent[~valid] = PERCENT_NODATA
    grid = Grid.from_raster(str(paths.file("valid_mask.tif")))
    write_geotiff(paths.file(name), percent, grid, ["probability_percent"], nodata=PERCENT_NODATA)


def read_percent(paths: ChainPaths, name: str) -> np.ndarray:
    percent = read_bands(paths.file(name))[0]
    return np.where(percent == PERCENT_NODATA, 0, percent).astype(np.float32) / 100


def step_inference(paths: ChainPaths, variant: str) -> dict:
    probability, seconds = predict(paths, variant, current=True)
    write_percent(paths, f"probability_{variant}.tif", probability)
    return {"inference_s": round(seconds, 1)}


def step_ensemble(paths: ChainPaths) -> dict:
    members = [read_percent(paths, f"probability_{variant}.tif") for variant in MODEL_BANDS]
    write_percent(paths, "probability_ensemble.tif", ensemble_mean(members))
    return {}


def step_cleaning(paths: ChainPaths) -> dict:
    probability = read_percent(paths, "probability_ensemble.tif")
    valid = read_bands(paths.file("valid_mask.tif"))[0].astype(bool)
    water = read_bands(paths.file("water_mask.tif"))[0].astype(bool)
    result = clean_mask(probability, valid, water, CleaningParams())
    grid = Grid.from_raster(str(paths.file("valid_mask.tif")))
    write_geotiff(paths.file("cleaned_mask.tif"), result.mask.astype(np.uint8), grid, ["rts"])
    return result.summary()


def step_level1(paths: ChainPaths) -> dict:
    with rasterio.open(paths.file("cleaned_mask.tif")) as source:
        mask, transform, crs = source.read(1).astype(bool), source.transform, source.crs.to_string()
    polygons = polygonise(mask, transform, crs, connectivity=CleaningParams().connectivity)
    _, _, acquired = read_metadata(find_planet_assets(paths.scene.folder).metadata)
    params = ProductParams()
    features = level1_features(polygons, paths.scene.item_id, acquired.date(), params, CleaningParams().threshold)
    write_level1(features, paths.file("level1.parquet"))
    return {"features": len(features)}


STEPS: list[tuple[str, Callable[..., dict], tuple]] = [
    ("ingestion (SR, udm2, mask, footprint)", step_ingestion, ()),
    ("terrain (rel. elevation, slope)", step_terrain, ()),
    ("TCVIS", step_tcvis, ()),
    ("water mask", step_water, ()),
    ("input stack (build + write)", step_stack, ()),
    ("inference tcvis (10 bands)", step_inference, ("tcvis",)),
    ("inference notcvis (7 bands)", step_inference, ("notcvis",)),
    ("ensemble", step_ensemble, ()),
    ("cleaning", step_cleaning, ()),
    ("polygons + Level 1", step_level1, ()),
]
PREVIOUS_STEPS = [("(previous input stack: whole scene)", step_stack_whole, ())]  # side by side, not in the total


# --- running steps in fresh processes ---------------------------------------------------------------------


def memory_status(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in bytes, from /proc/self/status (Linux).

    Not ``ru_maxrss``: Linux keeps that across exec, so a spawned child would report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_memory() -> None:
    """Hand freed heap memory back to the OS, then restart the peak (VmHWM) from the current size (Linux, glibc)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def timed_step(step: Callable[..., dict], paths: ChainPaths, args: tuple) -> StepResult:
    """Run one step: wall time, peak memory and the process size when it started."""
    reset_peak_memory()
    start_bytes = memory_status("VmRSS")
    started = time.perf_counter()
    info = step(paths, *args)
    seconds = time.perf_counter() - started
    return StepResult(seconds, memory_status("VmHWM"), start_bytes, info)


def in_fresh_process(function: Callable, *args):
    """``function(*args)`` in a new spawned process (no state or memory from earlier work)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(function, *args).result()


def chain_steps(paths: ChainPaths) -> list[StepResult]:
    """Every step once, in order (run in a fresh process); prints each row as it finishes."""
    pixels = paths.scene.width * paths.scene.height
    results = []
    for label, step, args in STEPS + PREVIOUS_STEPS:
        result = timed_step(step, paths, args)
        results.append(result)
        above = result.peak_bytes - result.start_bytes
        info = " ".join(f"{key}={value}" for key, value in result.info.items())
        print(
            f"  {label:<38} {result.seconds:7.1f} {result.peak_bytes / 1e6:8.0f} {above / 1e6:9.0f} MB "
            f"{above / pixels:6.1f}  {info}",
            flush=True,
        )
    return results


def calibration_stack(root: Path) -> np.ndarray:
    """The input stack of a small synthetic scene (built in this process, not timed)."""
    paths = prepared_scene(root, CALIBRATION_SIZE, CALIBRATION_SIZE, {})
    for _, step, args in STEPS[:5]:
        step(paths, *args)
    return read_bands(paths.file("input_stack.tif"))


def random_models() -> dict[str, torch.nn.Module]:
    """Both production models with random weights; notcvis is tcvis without its three TCVIS input channels, so
    that the two agree as trained models do (independent random models almost never agree on a positive)."""
    torch.manual_seed(0)
    tcvis = build_model(ModelParams(), in_channels=len(BAND_ORDER_TCVIS)).eval()
    notcvis = build_model(ModelParams(), in_channels=len(BAND_ORDER_NOTCVIS)).eval()
    state = tcvis.state_dict()
    state["encoder.conv1.weight"] = state["encoder.conv1.weight"][:, : len(BAND_ORDER_NOTCVIS)].clone()
    notcvis.load_state_dict(state)
    return {"tcvis": tcvis, "notcvis": notcvis}


def calibrate(model: torch.nn.Module, stack: np.ndarray) -> torch.nn.Module:
    """Shift the output bias so that ``POSITIVE_SHARE`` of the valid interior pixels get p >= 0.5, giving the
    cleaning and polygon steps objects to work on (an untrained model's logits are all on one side)."""
    in_channels = model.encoder.conv1.in_channels
    with torch.inference_mode():
        logits = model(torch.from_numpy(stack[np.newaxis, :in_channels]))[0, 0]
    interior = ndimage.binary_erosion(stack.any(axis=0), iterations=CALIBRATION_MARGIN_PX)  # away from nodata edges
    threshold = torch.quantile(logits[torch.from_numpy(interior)][::16].float(), 1 - POSITIVE_SHARE)
    with torch.no_grad():
        model.segmentation_head[0].bias -= threshold
    return model


def write_checkpoints(folder: Path, stack: np.ndarray) -> dict[str, Path]:
    """Checkpoints of both production models with random weights (speed does not depend on the weights)."""
    checkpoints = {}
    for variant, model in random_models().items():
        bands = MODEL_BANDS[variant]
        config = checkpoint_config(
            name=variant,
            model_params=ModelParams(),
            training_params=TrainingParams.paper(),
            bands=bands,
            normalisation=default_normalisation(),
            training_scene_ids=[],
            validation_scene_ids=[],
            history=[],
        )
        checkpoints[variant] = folder / f"{variant}.pt"
        save_checkpoint(checkpoints[variant], calibrate(model, stack), config)
    return checkpoints


def prepared_scene(root: Path, width: int, height: int, checkpoints: dict[str, Path]) -> ChainPaths:
    started = time.perf_counter()
    scene = synthesise_scene(root / "scene", width, height)
    print(f"  (synthetic scene written in {time.perf_counter() - started:.0f} s, not timed below)", flush=True)
    work = root / "work"
    work.mkdir()
    return ChainPaths(scene, work, checkpoints)


def run_chain(paths: ChainPaths) -> list[tuple[str, StepResult]]:
    """The chain in one fresh process (the size after imports is its start), each step's peak on its own."""
    print(f"  {'step':<38} {'s':>7} {'peak MB':>8} {'above start':>12} {'B/px':>6}  info", flush=True)
    labels = [label for label, _, _ in STEPS + PREVIOUS_STEPS]
    results = list(zip(labels, in_fresh_process(chain_steps, paths), strict=True))
    total = sum(result.seconds for _, result in results[: len(STEPS)])
    peak = max(result.peak_bytes for _, result in results[: len(STEPS)])
    print(f"  {'total':<38} {total:7.1f} {peak / 1e6:8.0f}   (peak of any step; bar {MEMORY_BAR_GB:.0f} GB)")
    return results


# --- inference: previous path against the current one ------------------------------------------------------


def models_once(paths: ChainPaths, current: bool, read_ahead: bool = False) -> dict[str, tuple[np.ndarray, float, int]]:
    """Per model: probabilities, seconds and peak memory of one run each (in a fresh process)."""
    runs = {}
    for variant in MODEL_BANDS:
        reset_peak_memory()
        probability, seconds = predict(paths, variant, current, read_ahead)
        runs[variant] = (probability, seconds, memory_status("VmHWM"))
    return runs


def interleaved_runs(
    paths: ChainPaths, repeat: int, settings: tuple[tuple[bool, bool], ...] = ((False, False), (True, False))
) -> list[dict[str, tuple[np.ndarray, float, int]]]:
    """Per (current, read_ahead) setting and model: first probabilities, best seconds, largest peak over ``repeat``
    rounds (default: [previous, current]).

    Each round runs every setting in turn, each in a fresh process, so that load from other users of the machine
    hits them alike.
    """
    rounds = [[in_fresh_process(models_once, paths, *setting) for setting in settings] for _ in range(repeat)]
    best = []
    for setting in range(len(settings)):
        runs = [round_[setting] for round_ in rounds]
        best.append(
            {
                variant: (
                    runs[0][variant][0],
                    min(run[variant][1] for run in runs),
                    max(run[variant][2] for run in runs),
                )
                for variant in MODEL_BANDS
            }
        )
    return best


def difference(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> str:
    """max and mean |difference| and the share of pixels on the other side of 0.5, over valid pixels."""
    change = np.abs(after[valid] - before[valid])
    flips = np.mean((after[valid] >= 0.5) != (before[valid] >= 0.5))
    return f"max |dp| {change.max():.3f}, mean |dp| {change.mean():.1e}, class flips {flips:.1e} of valid pixels"


def cleaned_agreement(paths: ChainPaths, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> str:
    """IoU of the cleaned masks of two ensemble probabilities and their object counts."""
    water = read_bands(paths.file("water_mask.tif"))[0].astype(bool)
    masks = [clean_mask(ensemble, valid, water, CleaningParams()) for ensemble in (before, after)]
    union = np.count_nonzero(masks[0].mask | masks[1].mask)
    iou = np.count_nonzero(masks[0].mask & masks[1].mask) / union if union else 1.0
    kept = [mask.summary()["kept"] for mask in masks]
    return f"cleaned-mask IoU {iou:.4f}, objects kept {kept[0]} -> {kept[1]}"


def compare_inference(paths: ChainPaths, repeat: int) -> None:
    """Both models with the previous and the current inference path, side by side (see the module docstring)."""
    scene = paths.scene
    print(
        f"\nInference, both models, {scene.width} x {scene.height} px, best of {repeat} interleaved fresh-process runs:"
    )
    before, after = interleaved_runs(paths, repeat)
    rows = (
        ("previous: fp32, BN layers, batch 8 per pass", before),
        ("current: TorchDevice defaults", after),
        ("  (bf16 autocast)" if TorchDevice(device="cpu").autocast_dtype() else "  (fp32: no native bf16)", None),
    )
    for label, runs in rows:
        if runs is None:
            print(label)
            continue
        seconds = sum(run[1] for run in runs.values())
        peak = max(run[2] for run in runs.values())
        per_model = ", ".join(f"{variant} {run[1]:.1f} s" for variant, run in runs.items())
        print(f"  {label:<46} {seconds:7.1f} s  peak {peak / 1e9:5.2f} GB  ({per_model})")
    seconds = {name: sum(run[1] for run in runs.values()) for name, runs in (("before", before), ("after", after))}
    print(f"  speed-up {seconds['before'] / seconds['after']:.2f}x")
    if (scene.width, scene.height) == (2048, 2048):
        print(
            f"  reference (best public DARTS pipeline, 2 cores): {REFERENCE['seconds']:.0f} s, "
            f"{REFERENCE['peak_gb']} GB; current / reference: {seconds['after'] / REFERENCE['seconds']:.2f} of the time"
        )
    valid = read_bands(paths.file("valid_mask.tif"))[0].astype(bool)
    for variant in MODEL_BANDS:
        print(f"  {variant:<8} previous vs current: {difference(before[variant][0], after[variant][0], valid)}")
    ensembles = [ensemble_mean([runs[variant][0] for variant in MODEL_BANDS]) for runs in (before, after)]
    print(f"  ensemble previous vs current: {difference(*ensembles, valid)}")
    print(f"  {cleaned_agreement(paths, *ensembles, valid)}")


def compare_read_ahead(paths: ChainPaths, repeat: int) -> None:
    """The current path with and without the background patch reader, both models, side by side."""
    scene = paths.scene
    print(f"\nRead-ahead, both models, {scene.width} x {scene.height} px, best of {repeat} interleaved runs:")
    without, with_ = interleaved_runs(paths, repeat, settings=((True, False), (True, True)))
    for label, runs in (("patches read in the inference thread", without), ("patches read ahead by a thread", with_)):
        seconds = sum(run[1] for run in runs.values())
        peak = max(run[2] for run in runs.values())
        print(f"  {label:<46} {seconds:7.1f} s  peak {peak / 1e9:5.2f} GB")
    ratio = sum(run[1] for run in without.values()) / sum(run[1] for run in with_.values())
    same = all(np.array_equal(without[variant][0], with_[variant][0]) for variant in MODEL_BANDS)
    print(f"  speed-up {ratio:.3f}x; identical probabilities: {same}")


def demo_agreement(home: Path) -> None:
    """Previous vs current inference path with the trained models of a finished ``darts demo`` on its scenes."""
    checkpoints = {variant: home / "models" / f"{variant}.pt" for variant in MODEL_BANDS}
    folders = sorted(folder for folder in (home / "scenes").iterdir() if (folder / "input_stack.tif").exists())
    print(f"\nTrained demo models ({home}), previous vs current inference path, {len(folders)} scenes:")
    flips, changed, valid_pixels, kept = 0, 0, 0, [0, 0]
    for folder in folders:
        runs = [
            [predict_stack(folder / "input_stack.tif", checkpoint, len(MODEL_BANDS[variant]), current)[0]
             for variant, checkpoint in checkpoints.items()]
            for current in (False, True)
        ]  # fmt: skip
        ensembles = [ensemble_mean(members) for members in runs]
        valid = read_bands(folder / "valid_mask.tif")[0].astype(bool)
        water = read_bands(folder / "water_mask.tif")[0].astype(bool)
        masks = [clean_mask(ensemble, valid, water, CleaningParams()) for ensemble in ensembles]
        flips += np.count_nonzero(((ensembles[0] >= 0.5) != (ensembles[1] >= 0.5)) & valid)
        changed += np.count_nonzero(masks[0].mask != masks[1].mask)
        valid_pixels += np.count_nonzero(valid)
        kept = [total + mask.summary()["kept"] for total, mask in zip(kept, masks, strict=True)]
        print(f"  {folder.name:<34} {difference(*ensembles, valid)}")
    print(
        f"  all scenes: ensemble class flips {flips / valid_pixels:.1e}, cleaned-mask pixels changed "
        f"{changed / valid_pixels:.1e} of {valid_pixels:,} valid pixels; objects kept {kept[0]} -> {kept[1]}"
    )


# --- main ---------------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(value) for value in text.lower().split("x"))
    return width, height


def memory_model(chains: dict[tuple[int, int], list[tuple[str, StepResult]]]) -> None:
    """Per step, memory above the process start fitted as constant + bytes per pixel from the smallest and
    largest scene: the per-pixel part is the step's raster buffers, the constant part does not grow."""
    (small, small_rows), (large, large_rows) = min(chains.items()), max(chains.items())
    small_px, large_px = small[0] * small[1], large[0] * large[1]
    print(f"\nMemory above start = constant + per pixel (fitted on {small_px / 1e6:.1f} and {large_px / 1e6:.1f} Mpx):")
    for (label, first), (_, second) in zip(small_rows, large_rows, strict=True):
        above = [result.peak_bytes - result.start_bytes for result in (first, second)]
        per_pixel = (above[1] - above[0]) / (large_px - small_px)
        print(f"  {label:<38} {(above[0] - per_pixel * small_px) / 1e6:7.0f} MB + {per_pixel:5.1f} B/px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", type=parse_size, help="WIDTHxHEIGHT (repeatable)")
    parser.add_argument("--compare", type=parse_size, default=(2048, 2048), help="scene size of the comparison")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--read-ahead", action="store_true", help="compare read-ahead on/off instead")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting in the comparison (best is kept)")
    parser.add_argument("--workdir", type=Path, default=None, help="where scenes are written (default: temp)")
    parser.add_argument("--demo-home", type=Path, help="only compare the paths on the trained models of a demo home")
    args = parser.parse_args()
    if args.demo_home:
        demo_agreement(args.demo_home)
        return
    sizes = args.size or [(2048, 2048), (4096, 2048)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; device: {TorchDevice(device='cpu').describe()}"
    )
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as temp:
        root = Path(temp)
        checkpoints = write_checkpoints(root, calibration_stack(root / "calibration"))
        chains, prepared = {}, {}
        for width, height in sizes:
            print(f"\nPer-scene chain, {width} x {height} px ({width * height / 1e6:.1f} Mpx), one run per step:")
            prepared[(width, height)] = prepared_scene(root / f"{width}x{height}", width, height, checkpoints)
            chains[(width, height)] = run_chain(prepared[(width, height)])
        if len(chains) > 1:
            memory_model(chains)
        if not args.no_compare:
            paths = prepared.get(args.compare)
            if paths is None:
                print(f"\nInput steps for the comparison scene {args.compare[0]} x {args.compare[1]}:")
                paths = prepared_scene(root / "compare", *args.compare, checkpoints)
                for _, step, step_args in STEPS[:5]:
                    in_fresh_process(timed_step, step, paths, step_args)
            if args.read_ahead:
                compare_read_ahead(paths, args.repeat)
            else:
                compare_inference(paths, args.repeat)


if __name__ == "__main__":
    main()
