"""Model training on the demo's training data: fp32 against mixed precision, side by side in one run.

    uv run darts demo   # once: writes $DARTS_HOME/training/{train,validation}.npz
    uv run python benchmarks/training.py [--home darts_home] [--variant tcvis] [--epochs 5]

Trains the paper's UNet++/resnet34/depth 3 from scratch with the demo's training parameters (128 px patches,
batch 16, focal loss, augmentation) exactly as the ``model_checkpoint`` asset does, once per precision, each in a
fresh process so neither inherits the other's warm caches: fp32, and the mixed precision ``TorchDevice`` picks on
this machine (bf16 autocast where the CPU has native bf16; on CUDA bf16). Prints seconds per epoch and the
validation scores of every epoch, so speed and quality are compared on the same data and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from darts_assets.training import VARIANT_BANDS
from darts_core.model import EpochMetrics, train_model
from darts_core.params import ModelParams, TrainingParams
from darts_core.training_data import load_patchset
from resources.gpu import TorchDevice


def train_once(home: Path, variant: str, epochs: int, precision: str) -> tuple[float, list[EpochMetrics]]:
    """Wall seconds and history of one training run at ``precision`` (a ``TorchDevice`` precision setting)."""
    device = TorchDevice(training_precision=precision)
    bands = VARIANT_BANDS[variant]
    train = load_patchset(home / "training" / "train.npz").select(bands)
    val = load_patchset(home / "training" / "validation.npz").select(bands)
    params = dataclasses.replace(TrainingParams.demo(), epochs=epochs)
    started = time.perf_counter()
    _, history = train_model(
        train, val, ModelParams(), params, device=device.torch_device(), autocast_dtype=device.training_autocast_dtype()
    )
    return time.perf_counter() - started, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("darts_home"), help="a DARTS_HOME after `darts demo`")
    parser.add_argument("--variant", choices=sorted(VARIANT_BANDS), default="tcvis")
    parser.add_argument("--epochs", type=int, default=TrainingParams.demo().epochs)
    args = parser.parse_args()
    mixed = TorchDevice().describe()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; mixed precision here: {mixed}")
    train = load_patchset(args.home / "training" / "train.npz")
    print(f"{args.variant}: {len(train)} training patches of {train.inputs.shape[-1]} px, {args.epochs} epochs")
    results = {}
    for precision in ("fp32", "auto"):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            results[precision] = pool.submit(train_once, args.home, args.variant, args.epochs, precision).result()
    print(f"  {'precision':<10} {'epoch':>5} {'s':>6} {'train loss':>10} {'val loss':>8} {'F1':>6} {'IoU':>6}")
    for precision, (seconds, history) in results.items():
        label = "fp32" if precision == "fp32" else mixed["precision"]
        for record in history:
            print(
                f"  {label:<10} {record.epoch:>5} {record.seconds:>6.1f} {record.train_loss:>10.4f} "
                f"{record.val_loss:>8.4f} {record.f1:>6.3f} {record.iou:>6.3f}"
            )
        best = max(record.f1 for record in history)
        print(f"  {label:<10} total {seconds:.1f} s, best validation F1 {best:.3f}")
    ratio = results["fp32"][0] / results["auto"][0]
    print(f"speed-up of {mixed['precision']} over fp32: {ratio:.2f}x")


if __name__ == "__main__":
    main()
