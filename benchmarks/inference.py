"""Inference throughput of one model (pixels per second) through the real streamed, blended inference path.

    uv run python benchmarks/inference.py [--size 1024] [--repeat 2]
    uv run python benchmarks/inference.py --profile   # where one patch's time goes, previous vs current model

CPU: fp32 with batch sizes 1 and 2, channels-last, bf16 autocast, and the model as ``TorchDevice`` prepares it on
this CPU (BatchNorm folded, one patch per forward pass, bf16 where the CPU has native bf16). CUDA (when available):
fp32 vs bf16 autocast, channels-last, batch sizes 1-16, with and without ``torch.compile``, each as a share of the
physical limit: the GPU's dense bf16 peak over the model's FLOPs per pixel (counted with
``torch.utils.flop_counter``; printed on any device, with the limits of an A100, H100 and H200). The model is the
paper's UNet++/resnet34/depth 3 (decoder 256, 128, 64) with random weights (speed does not depend on the weights),
10 input bands; patches 1024 px with 256 overlap as in production.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from darts_core.inference import PatchByPatch, fold_batchnorm, predict_probabilities
from darts_core.model import build_model
from darts_core.params import BAND_ORDER_TCVIS, InferenceParams, ModelParams
from resources.gpu import TorchDevice


def throughput(model, stack: np.ndarray, device, dtype, channels_last: bool, batch: int, repeat: int) -> float:
    """Best pixels per second over ``repeat`` runs (after one warm-up) of the whole raster."""
    height, width = stack.shape[1:]

    def read_window(row: int, col: int, rows: int, cols: int) -> np.ndarray:
        return stack[:, row : row + rows, col : col + cols]

    best = 0.0
    for attempt in range(repeat + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        predict_probabilities(read_window, height, width, model, InferenceParams(), device, dtype, channels_last, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if attempt:  # the first run warms up kernels and caches
            best = max(best, height * width / (time.perf_counter() - started))
    return best


PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peaks (vendor data sheets)
FLOP_PATCH_PX = 512  # FLOPs of this conv net scale with the pixels; a smaller patch counts them faster


def flops_per_pixel(model: torch.nn.Module, bands: int) -> float:
    """Forward-pass FLOPs per input pixel (a multiply-add counts 2), counted by ``torch.utils.flop_counter``."""
    patch = torch.zeros(1, bands, FLOP_PATCH_PX, FLOP_PATCH_PX, device=next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(patch)
    return counter.get_total_flops() / FLOP_PATCH_PX**2


def print_limits(per_pixel: float) -> None:
    print(
        f"Model FLOPs: {per_pixel / 1e3:.1f} kFLOP per pixel, {per_pixel * 1024**2 / 1e12:.2f} TFLOP per 1024^2 patch"
    )
    for gpu, tflops in PEAK_BF16_TFLOPS.items():
        print(
            f"  physical limit on an {gpu} (bf16 dense {tflops:.0f} TFLOP/s): "
            f"{tflops * 1e12 / per_pixel / 1e6:,.0f} Mpx/s"
        )


def peak_tflops(name: str) -> float | None:
    return next((tflops for gpu, tflops in PEAK_BF16_TFLOPS.items() if gpu in name), None)


def profile_patch(model, patch: torch.Tensor, dtype, batch: int, rows: int) -> None:
    """torch.profiler table (CPU time by operator) of one forward pass over ``batch`` copies of ``patch``."""
    inputs = patch.repeat(batch, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype, enabled=dtype is not None):
        model(inputs[:1])  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            model(inputs)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def profile(rows: int) -> None:
    """Previous inference model (fp32, BatchNorm layers, batch of 8) against the current one (TorchDevice on
    this CPU: BatchNorm folded, one patch per pass, bf16 where native), one 1024 px patch each."""
    torch.manual_seed(0)
    model = build_model(ModelParams(), in_channels=len(BAND_ORDER_TCVIS)).eval().to(memory_format=torch.channels_last)
    patch = torch.rand(1, len(BAND_ORDER_TCVIS), 1024, 1024)
    print("Previous: fp32, BatchNorm layers, a batch of 8 patches")
    profile_patch(model, patch, None, InferenceParams().batch_size, rows)
    print("Current: BatchNorm folded, one patch, autocast", TorchDevice(device="cpu").describe()["precision"])
    profile_patch(fold_batchnorm(model), patch, TorchDevice(device="cpu").autocast_dtype(), 1, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="raster side in pixels")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one patch, previous vs current model")
    args = parser.parse_args()
    if args.profile:
        profile(rows=12)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stack = np.random.default_rng(0).random((len(BAND_ORDER_TCVIS), args.size, args.size), dtype=np.float32)
    model = build_model(ModelParams(), in_channels=len(BAND_ORDER_TCVIS)).to(device).eval()
    per_pixel = flops_per_pixel(model, len(BAND_ORDER_TCVIS))
    print_limits(per_pixel)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    limit = peak_tflops(name) * 1e12 / per_pixel if device.type == "cuda" and peak_tflops(name) else None
    print(f"Inference throughput, {args.size} x {args.size} px raster, {name}:")
    print(f"  {'precision':<10} {'layout':<14} {'batch':>5} {'Mpx/s':>8} {'s per 1024^2':>13} {'of limit':>9}")
    if device.type == "cuda":
        settings = [(dtype, True, batch, False) for dtype in (None, torch.bfloat16) for batch in (1, 4, 8, 16)]
        settings += [
            (torch.bfloat16, False, 8, False),
            (torch.bfloat16, True, 8, True),
            (torch.bfloat16, True, 16, True),
        ]
    else:
        settings = [
            (None, False, 1, False),
            (None, False, 2, False),
            (None, True, 1, False),
            (torch.bfloat16, True, 1, False),
        ]
    for dtype, channels_last, batch, compiled in settings:
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        runner = torch.compile(model) if compiled else model
        rate = throughput(runner, stack, device, dtype, channels_last, batch, args.repeat)
        precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        layout = ("channels-last" if channels_last else "contiguous") + (" +compile" if compiled else "")
        share = f"{rate / limit:9.1%}" if limit else f"{'':>9}"
        print(f"  {precision:<10} {layout:<14} {batch:5d} {rate / 1e6:8.3f} {1024 * 1024 / rate:13.2f} {share}")
    if device.type == "cpu":
        current = PatchByPatch(fold_batchnorm(model).to(memory_format=torch.channels_last)).eval()
        dtype = TorchDevice(device="cpu").autocast_dtype()
        rate = throughput(current, stack, device, dtype, True, 8, args.repeat)
        precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        print(f"  {precision:<10} {'channels-last':<14} {8:5d} {rate / 1e6:8.3f} {1024 * 1024 / rate:13.2f}", end="")
        print("  <- TorchDevice on this CPU: BN folded, one patch per pass")


if __name__ == "__main__":
    main()
