"""The torch device for training and inference: device choice, precision, memory layout, batch size.

Models are loaded once per run (per checkpoint file and version) and kept in a private cache.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from darts_core.inference import PatchByPatch, cpu_has_native_bf16, fold_batchnorm
from darts_core.model import load_checkpoint

DEVICE_LOCK_FOLDER_ENV = "DARTS_DEVICE_LOCK_FOLDER"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchDevice(ConfigurableResource):
    """Where models run. ``auto`` picks CUDA when present, else the CPU; an explicit setting wins."""

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    precision: str = Field(
        default="auto",
        description="auto (GPU: bf16 or fp16; CPU: bf16 where it has native bf16, AVX512-BF16/AMX, else fp32), "
        "fp32, bf16, fp16",
    )
    training_precision: str = Field(
        default="fp32",
        description="precision of training: fp32, or bf16/fp16 autocast (auto: as inference). Measured on the demo "
        "(benchmarks/training.py, CPU with native bf16): bf16 trains 1.9x faster but reached validation F1 0.67 "
        "instead of 0.76 after the demo's 5 epochs, so fp32 stays the default",
    )
    channels_last: bool = Field(default=True, description="channels-last layout (faster on GPU and, measured, CPU)")
    batch_size: int = Field(
        default=8, ge=1, description="patches per forward pass on GPU (halved on CUDA out-of-memory); CPU: one by one"
    )
    cpu_threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 keeps torch's default")
    lock_folder: str = Field(
        default="",
        description=f"folder of the per-device lock files of this machine; empty: ${DEVICE_LOCK_FOLDER_ENV}, else "
        "the system temp folder",
    )

    _models: dict[tuple[str, float], tuple[torch.nn.Module, dict[str, Any]]] = PrivateAttr(default_factory=dict)
    _model_loads: int = PrivateAttr(default=0)

    @property
    def model_loads(self) -> int:
        """How many checkpoints this resource instance has read from storage (cache misses)."""
        return self._model_loads

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} requested but CUDA is not available")
        return device

    def autocast_dtype(self) -> torch.dtype | None:
        """The inference autocast dtype (None: fp32)."""
        return self._dtype(self.precision)

    def training_autocast_dtype(self) -> torch.dtype | None:
        """The training autocast dtype (None: fp32)."""
        return self._dtype(self.training_precision)

    def _dtype(self, precision: str) -> torch.dtype | None:
        if precision != "auto":
            if precision not in PRECISIONS:
                raise ValueError(f"precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
            return PRECISIONS[precision]
        if self.torch_device().type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None

    def describe(self) -> dict[str, Any]:
        dtype = self.autocast_dtype()
        training = self.training_autocast_dtype()
        return {
            "device": str(self.torch_device()),
            "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
            "training_precision": "fp32" if training is None else str(training).removeprefix("torch."),
            "channels_last": self.channels_last,
            "batch_size": self.batch_size,
        }

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this machine's lock on the device: one model at a time per device, across processes.

        Dagster's ``gpu`` pool keeps model steps apart through the instance, but on the SQLite instance of one
        machine two runs' steps claiming the last free slot at the same moment can both get it (the claim's
        ``SELECT ... FOR UPDATE`` is a no-op in SQLite; seen in tests/test_scale_out.py); this lock makes the
        guarantee hold there too. A step blocked by it waits, as it would for the pool.
        """
        folder = Path(self.lock_folder or os.environ.get(DEVICE_LOCK_FOLDER_ENV) or tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        device = re.sub(r"[^A-Za-z0-9]+", "-", str(self.torch_device()))
        with open(folder / f"darts-device-{device}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_model(self, checkpoint: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The checkpoint's model on this device in eval mode, loaded once per file version.

        BatchNorm is folded into the convolutions; on the CPU the model runs one patch at a time (same speed as
        batches there, a fraction of the memory).
        """
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        key = (str(checkpoint), Path(checkpoint).stat().st_mtime)
        if key not in self._models:
            model, config = load_checkpoint(checkpoint, map_location="cpu")
            model = fold_batchnorm(model.to(self.torch_device()).eval())
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if self.torch_device().type == "cpu":
                model = PatchByPatch(model).eval()
            self._models[key] = (model, config)
            self._model_loads += 1
        return self._models[key]
