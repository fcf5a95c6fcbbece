"""Patch inference: exact ramp blending, coverage, streaming and out-of-memory retry."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from darts_core.inference import (
    PatchByPatch,
    axis_weight_sum,
    cpu_has_native_bf16,
    fold_batchnorm,
    patch_origins,
    predict_probabilities,
    ramp_weights,
)
from darts_core.model import build_model
from darts_core.params import InferenceParams, ModelParams
from resources.gpu import TorchDevice

SMALL = InferenceParams(patch_size=64, overlap=16, batch_size=4)
PAPER = InferenceParams()  # 1024 / 256


def band_reader(stack: np.ndarray, calls: list | None = None):
    """read_window over an in-memory (C, H, W) stack, clipped at the edge like a rasterio window read."""

    def read_window(row: int, col: int, height: int, width: int) -> np.ndarray:
        if calls is not None:
            calls.append((row, col, height, width))
        return stack[:, row : row + height, col : col + width]

    return read_window


def first_band_logits(batch: torch.Tensor) -> torch.Tensor:
    """A 'model' whose logit is band 0: the blended probability must be sigmoid(band 0) exactly."""
    return batch[:, :1]


def random_stack(height: int, width: int, bands: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (bands, height, width)).astype(np.float32)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(values)).numpy()


@pytest.mark.parametrize(
    ("shape", "params"),
    [
        ((1024, 1024), PAPER),
        ((1500, 2100), PAPER),
        ((300, 700), PAPER),
        ((100, 150), SMALL),
        ((64, 64), SMALL),
        ((30, 50), SMALL),
        ((112, 160), SMALL),  # (height - patch) a multiple of the stride
    ],
)
def test_blending_reproduces_a_per_pixel_function_exactly(shape, params):
    stack = random_stack(*shape, bands=1)
    result = predict_probabilities(band_reader(stack), *shape, first_band_logits, params)
    assert result.probabilities.shape == shape
    assert result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities, sigmoid(stack[0]), rtol=0, atol=1e-6)
    assert result.patches == len(patch_origins(*shape, params.patch_size, params.overlap))


@pytest.mark.parametrize("shape", [(100, 150), (64, 64), (30, 50), (200, 65), (1500, 2100)])
def test_origins_cover_every_pixel_without_partial_patches(shape):
    patch, overlap = 64, 16
    coverage = np.zeros(shape, dtype=int)
    for row, col in patch_origins(*shape, patch, overlap):
        assert row >= 0 and col >= 0
        for start, size in ((row, shape[0]), (col, shape[1])):
            assert start + patch <= size or start == 0  # a partial patch only when the raster is smaller
        coverage[row : row + patch, col : col + patch] += 1
    assert (coverage >= 1).all()


def test_origins_step_by_the_stride_and_end_flush():
    assert patch_origins(100, 64, 64, 16) == [(0, 0), (36, 0)]
    assert patch_origins(160, 30, 64, 16) == [(0, 0), (48, 0), (96, 0)]
    assert patch_origins(30, 50, 64, 16) == [(0, 0)]
    with pytest.raises(ValueError, match="overlap"):
        patch_origins(100, 100, 64, 64)


@pytest.mark.parametrize(("patch", "overlap"), [(64, 16), (1024, 256), (8, 0), (10, 7)])
def test_ramp_weights_positive_symmetric_and_flat_inside(patch, overlap):
    weights = ramp_weights(patch, overlap)
    assert weights.shape == (patch, patch) and weights.dtype == np.float32
    assert (weights > 0).all() and weights.max() <= 1.0
    np.testing.assert_array_equal(weights, weights[::-1, ::-1])
    np.testing.assert_array_equal(weights, weights.T)
    if 2 * overlap < patch:
        assert (weights[overlap : patch - overlap, overlap : patch - overlap] == 1).all()
        np.testing.assert_allclose(weights[0, overlap], 0.5 / overlap if overlap else 1.0)


def test_weight_sum_positive_everywhere():
    for size in (30, 64, 100, 1500):
        assert (axis_weight_sum(size, 64, 16) > 0).all()


def test_out_of_memory_halves_the_batch_and_gives_the_same_result():
    shape = (150, 200)
    stack = random_stack(*shape, bands=1)
    calls: list[int] = []

    def picky_model(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return first_band_logits(batch)

    expected = predict_probabilities(band_reader(stack), *shape, first_band_logits, SMALL, batch_size=8)
    result = predict_probabilities(band_reader(stack), *shape, picky_model, SMALL, batch_size=8)
    assert result.batch_size == 2 and expected.batch_size == 8
    assert calls[:2] == [8, 4] and set(calls[2:]) <= {1, 2}
    assert sum(calls[2:]) == result.patches
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)


def test_out_of_memory_as_runtime_error_message_and_final_failure():
    stack = random_stack(70, 70, bands=1)

    def always_oom(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        predict_probabilities(band_reader(stack), 70, 70, always_oom, SMALL)

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    calls: list[int] = []
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        predict_probabilities(band_reader(stack), 70, 70, lambda b: calls.append(len(b)) or broken(b), SMALL)
    assert calls == [4]


@pytest.mark.parametrize("read_ahead", [False, True])
def test_patches_are_read_lazily_at_most_one_batch_ahead(read_ahead: bool):
    shape, batch_size = (300, 400), 3
    stack = random_stack(*shape, bands=1)
    reads: list[tuple[int, int, int, int]] = []
    readers: set[str] = set()
    progress: list[tuple[int, int]] = [(0, 0)]
    outstanding: list[int] = []

    def read_window(row: int, col: int, height: int, width: int) -> np.ndarray:
        reads.append((row, col, height, width))
        readers.add(threading.current_thread().name)
        outstanding.append(len(reads) - progress[-1][0])
        return stack[:, row : row + height, col : col + width]

    result = predict_probabilities(
        read_window,
        *shape,
        first_band_logits,
        SMALL,
        batch_size=batch_size,
        on_batch=lambda d, t: progress.append((d, t)),
        read_ahead=read_ahead,
    )
    assert len(reads) == result.patches
    # read but not yet run: the batch being filled, plus (reading ahead) one queued batch and the patch in hand
    assert max(outstanding) == (2 * batch_size + 1 if read_ahead else batch_size)
    assert readers == ({"patch-reader"} if read_ahead else {threading.current_thread().name})
    assert progress[-1] == (result.patches, result.patches)
    assert [done for done, _ in progress[1:-1]] == list(range(batch_size, result.patches, batch_size))
    assert all(h <= 64 and w <= 64 for _, _, h, w in reads)
    expected = predict_probabilities(band_reader(stack), *shape, first_band_logits, SMALL, read_ahead=False)
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)


def test_a_failing_read_ahead_raises_in_the_caller_and_a_failing_model_stops_the_reader():
    stack = random_stack(150, 200, bands=1)

    def broken_read(row: int, col: int, height: int, width: int) -> np.ndarray:
        if row > 0:
            raise OSError("input_stack.tif: read error at row 48")
        return stack[:, row : row + height, col : col + width]

    with pytest.raises(OSError, match="input_stack.tif: read error"):
        predict_probabilities(broken_read, 150, 200, first_band_logits, SMALL, read_ahead=True)

    def broken_model(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        predict_probabilities(band_reader(stack), 150, 200, broken_model, SMALL, read_ahead=True)
    assert not [thread for thread in threading.enumerate() if thread.name == "patch-reader"]


def test_multiband_model_autocast_and_channels_last_run_on_cpu():
    shape = (100, 90)
    stack = random_stack(*shape, bands=3)
    model = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1).eval()
    result = predict_probabilities(
        band_reader(stack), *shape, model, SMALL, autocast_dtype=torch.bfloat16, channels_last=True
    )
    assert result.probabilities.shape == shape
    assert np.isfinite(result.probabilities).all()
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()


def test_model_in_training_mode_is_refused():
    model = torch.nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="eval"):
        predict_probabilities(band_reader(random_stack(10, 10, 1)), 10, 10, model, SMALL)


def paper_model_with_batchnorm_statistics(in_channels: int = 3) -> torch.nn.Module:
    """The production architecture with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    model = build_model(ModelParams(), in_channels=in_channels)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_folding_batchnorm_removes_every_batchnorm_and_keeps_the_logits():
    model = paper_model_with_batchnorm_statistics()
    folded = fold_batchnorm(model)
    assert not any(isinstance(layer, torch.nn.BatchNorm2d) for layer in folded.modules())
    assert any(isinstance(layer, torch.nn.BatchNorm2d) for layer in model.modules())  # the original is untouched
    batch = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(folded(batch), model(batch), rtol=1e-4, atol=1e-4)


def test_folding_leaves_a_model_whose_batchnorm_is_not_after_its_convolution_unchanged():
    class NormFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.BatchNorm2d(2)

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return self.conv1(self.bn1(batch))

    model = NormFirst().eval()
    with torch.no_grad():
        model.bn1.running_mean.fill_(3.0)
    assert fold_batchnorm(model) is model


def test_patch_by_patch_gives_the_batched_logits():
    model = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1).eval()
    batch = torch.rand(5, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(PatchByPatch(model)(batch), model(batch))


class FirstBand(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return first_band_logits(batch)


def test_a_patch_by_patch_model_reads_one_patch_at_a_time():
    stack = random_stack(150, 200, bands=1)
    expected = predict_probabilities(band_reader(stack), 150, 200, first_band_logits, SMALL)
    result = predict_probabilities(band_reader(stack), 150, 200, PatchByPatch(FirstBand()).eval(), SMALL)
    assert result.batch_size == 1 and expected.batch_size == SMALL.batch_size
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)


def test_cpu_precision_follows_native_bf16_support():
    device = TorchDevice(device="cpu")
    assert device.autocast_dtype() == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert TorchDevice(device="cpu", precision="fp32").autocast_dtype() is None


def test_device_lock_keeps_holders_apart(tmp_path):
    """flock locks belong to open files, so two holders in one process exclude each other as two processes do."""
    device = TorchDevice(device="cpu", lock_folder=str(tmp_path))
    held: list[tuple[str, float]] = []

    def hold(name: str) -> None:
        with device.exclusive():
            held.append((f"{name} acquired", time.monotonic()))
            time.sleep(0.3)
            held.append((f"{name} released", time.monotonic()))

    first = threading.Thread(target=hold, args=("first",))
    first.start()
    while not held:
        time.sleep(0.01)
    hold("second")
    first.join()
    assert [event for event, _ in held] == ["first acquired", "first released", "second acquired", "second released"]
    assert [path.name for path in tmp_path.iterdir()] == ["darts-device-cpu.lock"]
