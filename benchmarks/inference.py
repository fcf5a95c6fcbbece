"""Inference throughput of one model (pixels per second) through the real streamed, blended inference path.

    uv run python benchmarks/inference.py [--size 1024] [--repeat 2]

CPU: fp32 with batch sizes 1 and 2, channels-last, bf16 autocast, and the model as ``TorchDevice`` prepares it on
this CPU (BatchNorm folded, one patch per forward pass, bf16 where the CPU has native bf16). CUDA (when available):
fp32 vs bf16 autocast, channels-last, batch sizes 1-16. The model is the paper's UNet++/resnet34/depth 3 (decoder
256, 128, 64) with random weights (speed does not depend on the weights), 10 input bands; patches 1024 px with 256
overlap as in production.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="raster side in pixels")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stack = np.random.default_rng(0).random((len(BAND_ORDER_TCVIS), args.size, args.size), dtype=np.float32)
    model = build_model(ModelParams(), in_channels=len(BAND_ORDER_TCVIS)).to(device).eval()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Inference throughput, {args.size} x {args.size} px raster, {name}:")
    print(f"  {'precision':<10} {'layout':<14} {'batch':>5} {'Mpx/s':>8} {'s per 1024^2':>13}")
    if device.type == "cuda":
        settings = [(dtype, True, batch) for dtype in (None, torch.bfloat16) for batch in (1, 4, 8, 16)]
        settings.append((torch.bfloat16, False, 8))
    else:
        settings = [(None, False, 1), (None, False, 2), (None, True, 1), (torch.bfloat16, True, 1)]
    for dtype, channels_last, batch in settings:
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        rate = throughput(model, stack, device, dtype, channels_last, batch, args.repeat)
        precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        layout = "channels-last" if channels_last else "contiguous"
        print(f"  {precision:<10} {layout:<14} {batch:5d} {rate / 1e6:8.3f} {1024 * 1024 / rate:13.2f}")
    if device.type == "cpu":
        current = PatchByPatch(fold_batchnorm(model).to(memory_format=torch.channels_last)).eval()
        dtype = TorchDevice(device="cpu").autocast_dtype()
        rate = throughput(current, stack, device, dtype, True, 8, args.repeat)
        precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        print(f"  {precision:<10} {'channels-last':<14} {8:5d} {rate / 1e6:8.3f} {1024 * 1024 / rate:13.2f}", end="")
        print("  <- TorchDevice on this CPU: BN folded, one patch per pass")


if __name__ == "__main__":
    main()
