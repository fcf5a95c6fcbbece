"""The segmentation model (design stage 5): architecture, focal loss, augmentation, training, checkpoints.

Augmentation (paper: albumentations HorizontalFlip, VerticalFlip, RandomRotate90, Blur,
RandomBrightnessContrast, MultiplicativeNoise, Cutout, each with probability 0.5), per patch:

* flips and rot90 move inputs and targets together;
* blur (Gaussian) acts on the Planet-derived bands (ndvi, blue, green, red, nir); brightness/contrast and
  multiplicative noise act on the four reflectance bands only. Terrain and TCVIS are not properties of the
  acquisition, so image-quality augmentations leave them alone. Invalid pixels (all bands 0) stay 0;
* cutout fills holes with the invalid value 0 in every band (what a cloud gap looks like at inference) and
  sets their targets to IGNORE: what lies under a hole is unobservable, so it is neither slump nor background.

Training keeps the weights of the epoch with the best validation F1 (ties: lower validation loss), the
"maximum F1" the paper reports per model.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex, BinaryPrecision, BinaryRecall
from torchvision.ops import sigmoid_focal_loss
from torchvision.transforms.v2 import functional as tvf

from darts_core.atomic import atomic_path
from darts_core.params import (
    BAND_ORDER_TCVIS,
    BandNormalisation,
    CleaningParams,
    ModelParams,
    TrainingParams,
    as_metadata,
)
from darts_core.training_data import IGNORE, PatchSet

CHECKPOINT_FORMAT = "darts-checkpoint-v1"
THRESHOLD = CleaningParams().threshold  # the ensemble threshold, also used for the training metrics
REQUIRED_CONFIG_KEYS = (
    "architecture", "bands", "normalisation", "patch_size", "training", "training_scene_ids",
    "validation_scene_ids", "metrics", "versions", "created",
)  # fmt: skip
VERSIONED_PACKAGES = ("torch", "segmentation-models-pytorch", "numpy", "torchmetrics", "darts-dagster")
STRIPPED_PREFIXES = ("module.", "model.")

AUGMENT_PROBABILITY = 0.5
PLANET_BANDS = ("ndvi", "blue", "green", "red", "nir")
REFLECTANCE_BANDS = ("blue", "green", "red", "nir")
BLUR_KERNEL = 5
BLUR_SIGMA = (0.5, 1.5)
BRIGHTNESS_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
NOISE_RANGE = (0.9, 1.1)
CUTOUT_HOLES = (1, 3)
CUTOUT_SIZE = (1 / 8, 1 / 4)  # hole side as a fraction of the patch side


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


# --- model and loss ----------------------------------------------------------------------------------


def build_model(params: ModelParams, in_channels: int) -> nn.Module:
    """The smp segmentation model (random init, never downloads weights); outputs logits (N, classes, H, W)."""
    return smp.create_model(
        params.architecture,
        encoder_name=params.encoder,
        encoder_weights=None,
        encoder_depth=params.encoder_depth,
        decoder_channels=tuple(params.decoder_channels),
        in_channels=in_channels,
        classes=params.classes,
    )


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, ignore_index: int = IGNORE) -> torch.Tensor:
    """Binary focal loss (no alpha weighting) on logits, mean over the pixels whose target is not ignored."""
    total, count = focal_loss_sum(logits, targets, gamma, ignore_index)
    return total / count if count else total


def focal_loss_sum(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float, ignore_index: int = IGNORE
) -> tuple[torch.Tensor, int]:
    """(sum of the per-pixel focal loss over non-ignored pixels, their count)."""
    logits = logits.reshape(targets.shape)
    keep = targets != ignore_index
    labels = torch.where(keep, targets, 0).to(logits.dtype)
    per_pixel = sigmoid_focal_loss(logits, labels, alpha=-1, gamma=gamma, reduction="none")
    return per_pixel[keep].sum(), int(keep.sum())


# --- augmentation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Channels:
    planet: list[int]
    reflectance: list[int]


Augmenter = Callable[[torch.Tensor, torch.Tensor, torch.Generator, _Channels], tuple[torch.Tensor, torch.Tensor]]


def _uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(size), generator=generator)


def _hflip(x, y, generator, channels):
    return x.flip(-1), y.flip(-1)


def _vflip(x, y, generator, channels):
    return x.flip(-2), y.flip(-2)


def _rot90(x, y, generator, channels):
    turns = int(torch.randint(1, 4, (), generator=generator))
    return x.rot90(turns, (-2, -1)), y.rot90(turns, (-2, -1))


def _blur(x, y, generator, channels):
    sigma = float(_uniform(generator, *BLUR_SIGMA))
    x = x.clone()
    x[channels.planet] = tvf.gaussian_blur(x[channels.planet], [BLUR_KERNEL, BLUR_KERNEL], [sigma, sigma])
    return x, y


def _brightness_contrast(x, y, generator, channels):
    brightness, contrast = float(_uniform(generator, *BRIGHTNESS_RANGE)), float(_uniform(generator, *CONTRAST_RANGE))
    x = x.clone()
    optical = x[channels.reflectance]
    mean = optical.mean(dim=(-2, -1), keepdim=True)
    x[channels.reflectance] = ((optical - mean) * contrast + mean * brightness).clamp(min=0)
    return x, y


def _multiplicative_noise(x, y, generator, channels):
    x = x.clone()
    noise = _uniform(generator, *NOISE_RANGE, x[channels.reflectance].shape).to(x.dtype)
    x[channels.reflectance] = x[channels.reflectance] * noise
    return x, y


def _cutout(x, y, generator, channels):
    x, y = x.clone(), y.clone()
    side = x.shape[-1]
    for _ in range(int(torch.randint(CUTOUT_HOLES[0], CUTOUT_HOLES[1] + 1, (), generator=generator))):
        height, width = (max(1, int(side * float(_uniform(generator, *CUTOUT_SIZE)))) for _ in range(2))
        row = int(torch.randint(0, side - height + 1, (), generator=generator))
        col = int(torch.randint(0, side - width + 1, (), generator=generator))
        x[:, row : row + height, col : col + width] = 0
        y[row : row + height, col : col + width] = IGNORE
    return x, y


GEOMETRIC_AUGMENTATIONS: dict[str, Augmenter] = {"hflip": _hflip, "vflip": _vflip, "rot90": _rot90}
PHOTOMETRIC_AUGMENTATIONS: dict[str, Augmenter] = {
    "blur": _blur,
    "brightness_contrast": _brightness_contrast,
    "multiplicative_noise": _multiplicative_noise,
}
AUGMENTATIONS: dict[str, Augmenter] = {**GEOMETRIC_AUGMENTATIONS, **PHOTOMETRIC_AUGMENTATIONS, "cutout": _cutout}


def augment(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    bands: Sequence[str] = BAND_ORDER_TCVIS,
    names: Sequence[str] = tuple(AUGMENTATIONS),
    probability: float = AUGMENT_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of a CPU batch (N, C, p, p) / (N, p, p); each of ``names`` hits a patch with
    ``probability``, in the order geometric, photometric, cutout. ``bands`` names the channels (its first C)."""
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {list(AUGMENTATIONS)}")
    band_names = list(bands[: inputs.shape[1]])
    channels = _Channels(
        planet=[band_names.index(name) for name in PLANET_BANDS if name in band_names],
        reflectance=[band_names.index(name) for name in REFLECTANCE_BANDS if name in band_names],
    )
    chosen = [name for name in AUGMENTATIONS if name in names]
    pairs = [_augment_one(x, y, generator, channels, chosen, probability) for x, y in zip(inputs, targets, strict=True)]
    if not pairs:
        return inputs.clone(), targets.clone()
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _augment_one(x, y, generator, channels, names, probability):
    for name in names:
        if float(torch.rand((), generator=generator)) >= probability:
            continue
        if name in PHOTOMETRIC_AUGMENTATIONS:
            invalid = (x == 0).all(dim=0)
            x, y = AUGMENTATIONS[name](x, y, generator, channels)
            x = x.masked_fill(invalid, 0)
        else:
            x, y = AUGMENTATIONS[name](x, y, generator, channels)
    return x, y


# --- training ---------------------------------------------------------------------------------------------


@dataclass
class EpochMetrics:
    """One epoch: mean focal losses, validation pixel metrics (threshold 0.5, IGNORE left out), lr, wall time."""

    epoch: int
    train_loss: float
    val_loss: float
    precision: float
    recall: float
    f1: float
    iou: float
    lr: float
    seconds: float


def pixel_metrics(device: str | torch.device = "cpu") -> MetricCollection:
    """torchmetrics binary precision / recall / F1 / IoU at THRESHOLD, ignoring IGNORE targets."""
    options = {"threshold": THRESHOLD, "ignore_index": IGNORE}
    return MetricCollection(
        {
            "precision": BinaryPrecision(**options),
            "recall": BinaryRecall(**options),
            "f1": BinaryF1Score(**options),
            "iou": BinaryJaccardIndex(**options),
        }
    ).to(device)


def _batches(patches: PatchSet, order: Sequence[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(order), batch_size):
        index = np.asarray(order[start : start + batch_size])
        yield torch.from_numpy(patches.inputs[index]), torch.from_numpy(patches.targets[index].astype(np.int64))


def _to_device(inputs: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    return inputs.to(device).contiguous(memory_format=torch.channels_last)


def _autocast(device: str | torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device`` (disabled for None: fp32)."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def evaluate_model(
    model: nn.Module,
    patches: PatchSet,
    params: TrainingParams,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, dict[str, float]]:
    """(mean focal loss, pixel metrics) of ``model`` on ``patches`` (eval mode, no augmentation)."""
    model.eval()
    metrics = pixel_metrics(device)
    loss_sum, count = 0.0, 0
    with torch.inference_mode():
        for inputs, targets in _batches(patches, range(len(patches)), params.batch_size):
            inputs, targets = _to_device(inputs, device), targets.to(device)
            with _autocast(device, autocast_dtype):
                logits = model(inputs)
            logits = logits.float().reshape(targets.shape)
            batch_sum, batch_count = focal_loss_sum(logits, targets, params.focal_gamma)
            loss_sum, count = loss_sum + float(batch_sum), count + batch_count
            metrics.update(torch.sigmoid(logits), targets)
    return loss_sum / max(count, 1), {name: float(value) for name, value in metrics.compute().items()}


def _train_epoch(model, optimiser, train: PatchSet, params: TrainingParams, generator, device, autocast_dtype) -> float:
    model.train()
    order = torch.randperm(len(train), generator=generator).tolist()
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=autocast_dtype == torch.float16)
    losses = []
    for inputs, targets in _batches(train, order, params.batch_size):
        inputs, targets = augment(inputs, targets, generator, train.bands)
        with _autocast(device, autocast_dtype):
            logits = model(_to_device(inputs, device))
        loss = focal_loss(logits.float(), targets.to(device), params.focal_gamma)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        losses.append(loss.item())
    return float(np.mean(losses))


def train_model(
    train: PatchSet,
    val: PatchSet,
    model_params: ModelParams,
    params: TrainingParams,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[nn.Module, list[EpochMetrics]]:
    """Train from scratch (seeded); returns the best-validation-F1 model (eval mode) and the per-epoch history.

    AdamW(lr, weight_decay), ExponentialLR(lr_gamma) stepped per epoch, focal loss (focal_gamma), patch
    order and augmentation drawn from a generator seeded with ``params.seed``. Runs channels-last (about 20 %
    faster on CPU) and, with ``autocast_dtype``, in mixed precision (weights, optimiser and loss stay fp32;
    fp16 adds gradient scaling); the returned model is fp32 and contiguous again.
    """
    if not len(train) or not len(val):
        raise ValueError(f"training needs patches: {len(train)} training and {len(val)} validation patches")
    if train.bands != val.bands:
        raise ValueError(f"training bands {train.bands} differ from validation bands {val.bands}")
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    model = build_model(model_params, in_channels=len(train.bands)).to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=params.lr_gamma)
    history: list[EpochMetrics] = []
    best_key, best_state = None, None
    for epoch in range(1, params.epochs + 1):
        started, lr = time.perf_counter(), scheduler.get_last_lr()[0]
        train_loss = _train_epoch(model, optimiser, train, params, generator, device, autocast_dtype)
        val_loss, scores = evaluate_model(model, val, params, device, autocast_dtype)
        scheduler.step()
        record = EpochMetrics(epoch, train_loss, val_loss, **scores, lr=lr, seconds=time.perf_counter() - started)
        history.append(record)
        if best_key is None or (record.f1, -record.val_loss) > best_key:
            best_key, best_state = (record.f1, -record.val_loss), copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(record)
    model.load_state_dict(best_state)
    return model.to(memory_format=torch.contiguous_format).eval(), history


def best_epoch(history: Sequence[EpochMetrics]) -> EpochMetrics:
    """The epoch whose weights train_model keeps (highest F1, ties: lowest validation loss, then earliest)."""
    return max(history, key=lambda record: (record.f1, -record.val_loss, -record.epoch))


# --- checkpoints --------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What a checkpoint file holds: the state dict and the complete (JSON-able) config."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]


def package_versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def checkpoint_config(
    *,
    name: str,
    model_params: ModelParams,
    training_params: TrainingParams,
    bands: Sequence[str],
    normalisation: Mapping[str, BandNormalisation],
    training_scene_ids: Sequence[str],
    validation_scene_ids: Sequence[str],
    history: Sequence[EpochMetrics],
) -> dict[str, Any]:
    """The complete checkpoint config: everything needed to rebuild, apply and trace the model."""
    best = best_epoch(history) if history else None
    return _json_roundtrip(
        {
            "name": name,
            "architecture": as_metadata(model_params),
            "bands": list(bands),
            "normalisation": {band: as_metadata(normalisation[band]) for band in bands},
            "patch_size": training_params.patch_size,
            "threshold": THRESHOLD,
            "training": as_metadata(training_params),
            "training_scene_ids": sorted(set(training_scene_ids)),
            "validation_scene_ids": sorted(set(validation_scene_ids)),
            "metrics": [asdict(record) for record in history],
            "best_epoch": best.epoch if best else None,
            "versions": package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "checkpoint config",
    )


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """An untrained model with the architecture and input bands of ``config``."""
    architecture = dict(config["architecture"])
    architecture["decoder_channels"] = tuple(architecture["decoder_channels"])
    return build_model(ModelParams(**architecture), in_channels=len(config["bands"]))


def save_checkpoint(path: Path | str, model: nn.Module, config: Mapping[str, Any]) -> None:
    """Write {"format", "state_dict", "config"} atomically with torch.save (config checked, made JSON-plain)."""
    path = Path(path)
    config = _json_roundtrip(dict(config), f"config for {path.name}")
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config for {path.name} lacks {missing}")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    _load_state(model_from_config(config), state_dict, path)  # fail now, not at inference time
    with atomic_path(path) as temp_path:
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state_dict, "config": config}, temp_path)


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The state dict and config of a DARTS checkpoint file (no model built)."""
    path = Path(path)
    payload = _torch_load(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a DARTS checkpoint (no 'format': '{CHECKPOINT_FORMAT}' entry); a plain smp state dict "
            "can be converted with import_smp_checkpoint"
        )
    config = payload.get("config")
    missing = [key for key in REQUIRED_CONFIG_KEYS if not isinstance(config, dict) or key not in config]
    if missing or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path}: incomplete DARTS checkpoint (config lacks {missing} or no state dict)")
    return Checkpoint(payload["state_dict"], config)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, config) rebuilt from the checkpoint file alone."""
    checkpoint = read_checkpoint(path, map_location)
    try:
        model = model_from_config(checkpoint.config)
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: cannot build the model of its config: {error}") from error
    _load_state(model, checkpoint.state_dict, Path(path))
    return model.to(map_location).eval(), checkpoint.config


def import_smp_checkpoint(state_dict_path: Path | str, config: Mapping[str, Any], out_path: Path | str) -> None:
    """Convert an external smp state dict (plain, or under a "state_dict" key) plus ``config`` to our format.

    "module." / "model." key prefixes (DataParallel, Lightning) are stripped; keys and shapes must match
    the architecture of ``config``.
    """
    source = Path(state_dict_path)
    payload = _torch_load(source, "cpu")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise CheckpointError(f"{source} is not a state dict (a mapping of parameter names to tensors)")
    state_dict = {_strip_prefixes(key): value for key, value in payload.items()}
    model = model_from_config(config)
    _load_state(model, state_dict, source)
    save_checkpoint(out_path, model, config)


def check_bands(
    config: Mapping[str, Any],
    stack_bands: Sequence[str],
    checkpoint: Path | str | None = None,
    stack_normalisation: Mapping[str, BandNormalisation] | None = None,
) -> None:
    """Raise ValueError naming the checkpoint when a stack's bands (or normalisation) differ from its config."""
    label = f"checkpoint {checkpoint or config.get('name', '?')}"
    expected, got = list(config["bands"]), list(stack_bands)
    if expected != got:
        raise ValueError(f"{label} expects {len(expected)} bands {expected}, the stack has {len(got)} bands {got}")
    if stack_normalisation is not None:
        stack_norm = {band: as_metadata(stack_normalisation[band]) for band in got}
        if _json_roundtrip(stack_norm, "normalisation") != config["normalisation"]:
            raise ValueError(f"{label} expects normalisation {config['normalisation']}, the stack has {stack_norm}")


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(
            f"{path} cannot be read as a weights-only torch file (truncated, corrupt or foreign): {error}"
        ) from error


def _load_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        summary = str(error).splitlines()
        detail = "; ".join(line.strip() for line in summary[:4])
        raise CheckpointError(f"{path}: state dict does not match the architecture of its config: {detail}") from error


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _json_roundtrip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is not JSON-able: {error}") from error
