"""Patch inference (design stage 6): overlapping patches, streamed in batches, blended with linear ramps.

Patches of ``patch_size`` px start every ``patch_size - overlap`` px; the last row/column of patches is aligned
to the raster edge, so no patch hangs over it (a raster smaller than a patch is zero-padded, like invalid
pixels in the stack). Each patch's sigmoid probabilities are weighted by a separable linear ramp that is
strictly positive, so the normalised sum ``sum(w * p) / sum(w)`` is an exact weighted mean at every pixel.

Because the patch origins form a grid and the ramp is an outer product, the weight sum is separable too:
it is kept as one row vector and one column vector, so memory is one (H, W) float32 accumulator plus one
batch of patches (read lazily through ``read_window``), never the whole scene's patches.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import product
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from darts_core.params import InferenceParams

ReadWindow = Callable[[int, int, int, int], np.ndarray]  # (row, col, height, width) -> float32 (C, h, w)
Model = Callable[[torch.Tensor], torch.Tensor]  # (N, C, p, p) -> logits (N, 1, p, p)
T = TypeVar("T")


@dataclass(frozen=True)
class InferenceResult:
    """Blended probabilities (H, W) float32, the batch size that finally ran, and the number of patches."""

    probabilities: np.ndarray
    batch_size: int
    patches: int


def axis_origins(size: int, patch: int, overlap: int) -> list[int]:
    """Patch starts along one axis: every ``patch - overlap`` px, the last one flush with the edge."""
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap {overlap} must be in [0, patch size {patch})")
    if size <= patch:
        return [0]
    return [*range(0, size - patch, patch - overlap), size - patch]


def patch_origins(height: int, width: int, patch: int, overlap: int) -> list[tuple[int, int]]:
    """(row, col) of every patch, row-major; together the patches cover the whole raster."""
    return list(product(axis_origins(height, patch, overlap), axis_origins(width, patch, overlap)))


def axis_ramp(patch: int, overlap: int) -> np.ndarray:
    """1-D weights: (i + 0.5) / overlap from each side, clipped to 1 (all > 0; all 1 without overlap)."""
    if overlap == 0:
        return np.ones(patch, dtype=np.float32)
    index = np.arange(patch, dtype=np.float64)
    distance_to_side = np.minimum(index, patch - 1 - index) + 0.5
    return np.clip(distance_to_side / overlap, None, 1.0).astype(np.float32)


def ramp_weights(patch: int, overlap: int) -> np.ndarray:
    """(patch, patch) float32 blending weights: the outer product of two linear ramps, > 0 everywhere."""
    ramp = axis_ramp(patch, overlap)
    return np.outer(ramp, ramp)


def axis_weight_sum(size: int, patch: int, overlap: int) -> np.ndarray:
    """Sum of the 1-D ramps of all patches along one axis (float64, > 0 everywhere)."""
    ramp = axis_ramp(patch, overlap).astype(np.float64)
    total = np.zeros(size, dtype=np.float64)
    for start in axis_origins(size, patch, overlap):
        length = min(patch, size - start)
        total[start : start + length] += ramp[:length]
    return total


def read_padded(read_window: ReadWindow, row: int, col: int, patch: int, height: int, width: int) -> np.ndarray:
    """One (C, patch, patch) float32 patch; the part beyond the raster edge is zero."""
    rows, cols = min(patch, height - row), min(patch, width - col)
    data = np.asarray(read_window(row, col, rows, cols), dtype=np.float32)
    if data.shape[1:] == (patch, patch):
        return data
    padded = np.zeros((data.shape[0], patch, patch), dtype=np.float32)
    padded[:, :rows, :cols] = data
    return padded


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def run_batch(
    model: Model,
    batch: np.ndarray,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
) -> np.ndarray:
    """Sigmoid probabilities (N, p, p) float32 for one (N, C, p, p) batch."""
    tensor = torch.from_numpy(batch)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(tensor)
    return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


def predict_probabilities(
    read_window: ReadWindow,
    height: int,
    width: int,
    model: Model,
    params: InferenceParams,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    read_ahead: bool | None = None,
) -> InferenceResult:
    """Blended sigmoid probabilities of ``model`` over the raster read through ``read_window``.

    ``model`` must already sit on ``device`` in eval mode. Patches are read lazily, at most one batch at a
    time (one patch for a :class:`PatchByPatch` model). A CUDA out-of-memory error halves the batch size and
    retries the same patches (down to 1, then it is raised); ``InferenceResult.batch_size`` is the size that
    finally ran. ``on_batch(done, total)`` reports progress in patches. With ``read_ahead`` (default: on CUDA) a
    background thread reads the next batch's patches while the model runs on the current one (``read_window`` is
    then called from that thread only). On the CPU it gains nothing, both cores being busy with the model, and holds
    ~150 MB more (0.99x, benchmarks/scene_chain.py --read-ahead), so it is off there by default.
    """
    if isinstance(model, torch.nn.Module) and model.training:
        raise ValueError("the model is in training mode: call model.eval() first")
    device = torch.device(device)
    patch, overlap = params.patch_size, params.overlap
    size = batch_size or params.batch_size
    if isinstance(model, PatchByPatch):
        size = 1  # it runs one patch per pass anyway: reading several ahead would only hold their memory
    origins = patch_origins(height, width, patch, overlap)
    weights = ramp_weights(patch, overlap)
    blended = np.zeros((height, width), dtype=np.float32)
    patches = ((origin, read_padded(read_window, *origin, patch, height, width)) for origin in origins)
    if (device.type == "cuda") if read_ahead is None else read_ahead:
        patches = read_in_background(patches, depth=size)
    run = partial(run_batch, model, device=device, autocast_dtype=autocast_dtype, channels_last=channels_last)
    done, final_size = 0, size
    for batch_origins, probabilities, batch_size_used in _batches(patches, size, run):
        final_size = batch_size_used
        for (row, col), probability in zip(batch_origins, probabilities, strict=True):
            rows, cols = min(patch, height - row), min(patch, width - col)
            blended[row : row + rows, col : col + cols] += probability[:rows, :cols] * weights[:rows, :cols]
        done += len(batch_origins)
        if on_batch is not None:
            on_batch(done, len(origins))
    blended /= axis_weight_sum(height, patch, overlap).astype(np.float32)[:, np.newaxis]
    blended /= axis_weight_sum(width, patch, overlap).astype(np.float32)[np.newaxis, :]
    return InferenceResult(blended, final_size, len(origins))


_END = object()


def read_in_background(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced by a background thread at most ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer; when the consumer stops early, the producer stops at
    its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((_END, error))

    producer = threading.Thread(target=produce, name="patch-reader", daemon=True)
    producer.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        producer.join()


def _batches(
    patches: Iterator[tuple[tuple[int, int], np.ndarray]],
    size: int,
    run: Callable[[np.ndarray], np.ndarray],
) -> Iterator[tuple[list[tuple[int, int]], np.ndarray, int]]:
    """Yield (origins, probabilities (N, p, p), batch size) per batch; on out-of-memory halve the size and retry.

    At most ``size`` patches are held (read but not yet yielded) at any time.
    """
    pending: list[tuple[tuple[int, int], np.ndarray]] = []
    while True:
        while len(pending) < size and (item := next(patches, None)) is not None:
            pending.append(item)
        if not pending:
            return
        chunk = pending[:size]
        try:
            probabilities = run(np.stack([data for _, data in chunk]))
        except RuntimeError as error:
            if size == 1 or not is_out_of_memory(error):
                raise
            probabilities = None
        if probabilities is None:  # outside the except block, so the failed batch's tensors can be freed
            size //= 2
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            continue
        del pending[: len(chunk)]
        yield [origin for origin, _ in chunk], probabilities, size


# --- CPU and model preparation (measured in benchmarks/scene_chain.py) ----------------------------------------

FOLD_CHECK_TOLERANCE = 1e-3  # max |logit difference| allowed between a model and its BatchNorm-folded copy


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 dot products natively (AVX512-BF16 or AMX), where bf16 autocast is ~2x fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The eval-mode ``model`` with every BatchNorm2d folded into the Conv2d before it (a copy; same logits).

    Folded pairs: consecutive children of an ``nn.Sequential`` (smp's Conv2dReLU, ResNet downsample) and sibling
    attributes ``convN`` -> ``bnN`` (torchvision ResNet blocks and stem). The copy is checked against the model on
    a small random input; when they differ (a pattern that does not hold for some architecture) the model is
    returned unchanged.
    """
    if model.training:
        raise ValueError("BatchNorm folding needs a model in eval mode")
    folded = copy.deepcopy(model)
    for module in list(folded.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return folded if _same_logits(model, folded) else model


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) child names of ``module`` where the batchnorm directly follows the convolution."""
    children = dict(module.named_children())
    names = list(children)
    if isinstance(module, nn.Sequential):
        candidates = list(zip(names, names[1:], strict=False))
    else:
        candidates = [("conv" + name[2:], name) for name in names if name.startswith("bn")]
    return [
        (conv, bn)
        for conv, bn in candidates
        if isinstance(children.get(conv), nn.Conv2d) and isinstance(children.get(bn), nn.BatchNorm2d)
    ]


def _same_logits(model: nn.Module, folded: nn.Module, size: int = 64) -> bool:
    first_conv = next((layer for layer in model.modules() if isinstance(layer, nn.Conv2d)), None)
    if first_conv is None:
        return True
    parameter = next(model.parameters())
    probe = torch.rand(1, first_conv.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    probe = probe.to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        return bool((model(probe) - folded(probe)).abs().max() <= FOLD_CHECK_TOLERANCE)


class PatchByPatch(nn.Module):
    """``model`` applied to one patch of a batch at a time.

    On the CPU, batching brings no speed, only memory (UNet++ at 1024 px: ~1.6 GB of activations per fp32
    patch): two models over a 2048 px tile with fp32 batches of 8 peaked at 14.9 GB, one bf16 patch at a time at
    3.1 GB (benchmarks/scene_chain.py). ``predict_probabilities`` reads one patch at a time for such a model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(batch[index : index + 1]) for index in range(len(batch))])
