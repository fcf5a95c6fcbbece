"""Untrained checkpoints of the real architecture: inference costs what it costs with trained ones."""

from pathlib import Path

import torch

from darts_core.model import build_model, checkpoint_config, save_checkpoint
from darts_core.params import BAND_ORDER_NOTCVIS, BAND_ORDER_TCVIS, ModelParams, StackParams, TrainingParams


def save_untrained_checkpoints(models_folder: Path, seed: int = 0) -> None:
    """``tcvis.pt`` and ``notcvis.pt`` (named ``<variant>_untrained``) under ``models_folder``."""
    torch.manual_seed(seed)
    for variant, bands in (("tcvis", BAND_ORDER_TCVIS), ("notcvis", BAND_ORDER_NOTCVIS)):
        config = checkpoint_config(
            name=f"{variant}_untrained",
            model_params=ModelParams(),
            training_params=TrainingParams.demo(),
            bands=bands,
            normalisation=StackParams().normalisation,
            training_scene_ids=[],
            validation_scene_ids=[],
            history=[],
        )
        save_checkpoint(models_folder / f"{variant}.pt", build_model(ModelParams(), len(bands)).eval(), config)
