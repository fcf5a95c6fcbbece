"""Training data and model checkpoints (partitions ``tcvis`` and ``notcvis``)."""

from contextlib import ExitStack

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetObservation,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from darts_assets.metadata import markdown_table
from darts_assets.placement import GPU_OP_TAGS
from darts_assets.scene_inputs import SCENES_FOLDER, input_stack, planet_scene
from darts_core.model import EpochMetrics, best_epoch, checkpoint_config, save_checkpoint, train_model
from darts_core.params import BAND_ORDER_NOTCVIS, BAND_ORDER_TCVIS, ModelParams, StackParams, as_metadata
from darts_core.training_data import build_training_data, load_patchset, read_labels, save_patchset
from partitions import SCENE_PARTITIONS_NAME, model_variant_partitions, scene_year
from resources.gpu import TorchDevice
from resources.storage import StorageRoot
from resources.training import TrainingSetup

TRAINING_FOLDER = "training"
MODELS_FOLDER = "models"
VARIANT_BANDS = {"tcvis": BAND_ORDER_TCVIS, "notcvis": BAND_ORDER_NOTCVIS}


def validation_scenes(labelled: list[str], configured: list[str]) -> list[str]:
    """The configured validation scenes, else the labelled scenes of the latest labelled year."""
    if configured:
        return sorted(configured)
    latest = max(scene_year(scene_id) for scene_id in labelled)
    return sorted(scene_id for scene_id in labelled if scene_year(scene_id) == latest)


@asset(
    deps=[
        AssetDep(input_stack, partition_mapping=AllPartitionMapping()),
        AssetDep(planet_scene, partition_mapping=AllPartitionMapping()),
    ],
    group_name="models",
    kinds={"numpy"},
    description="Training and validation patches cut from the input stacks of labelled scenes; invalid pixels ignored.",
)
def training_data(context: AssetExecutionContext, storage: StorageRoot, training: TrainingSetup) -> MaterializeResult:
    params = training.params()
    labels = read_labels(training.labels_path)
    scene_ids = set(context.instance.get_dynamic_partitions(SCENE_PARTITIONS_NAME))
    labelled = sorted(scene_ids & set(labels["image_id"]))
    if not labelled:
        raise Failure(f"no catalogued scene has labels in {training.labels_path}")
    validation = validation_scenes(labelled, training.validation_scene_ids)
    with ExitStack() as files:
        scenes = [
            (
                scene_id,
                files.enter_context(storage.local_input(SCENES_FOLDER, scene_id, "input_stack.tif")),
                files.enter_context(storage.local_input(SCENES_FOLDER, scene_id, "valid_mask.tif")),
            )
            for scene_id in labelled
        ]
        train, val = build_training_data(scenes, labels, validation, params)
    for name, patches in (("train", train), ("validation", val)):
        with storage.atomic_output(TRAINING_FOLDER, f"{name}.npz") as local:
            save_patchset(local, patches)
    return MaterializeResult(
        metadata={
            "train": MetadataValue.json(train.summary()),
            "validation": MetadataValue.json(val.summary()),
            "training_scenes": MetadataValue.json(sorted(set(train.scene_ids))),
            "validation_scenes": MetadataValue.json(validation),
            "labels": MetadataValue.path(training.labels_path),
            "parameters": MetadataValue.json(as_metadata(params)),
        }
    )


@asset(
    partitions_def=model_variant_partitions,
    deps=[training_data],
    group_name="models",
    kinds={"pytorch"},
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="UNet++ checkpoint (state dict + complete config) trained on the training data; tcvis: 10 bands, "
    "notcvis: the first 7.",
)
def model_checkpoint(
    context: AssetExecutionContext, storage: StorageRoot, gpu: TorchDevice, training: TrainingSetup
) -> MaterializeResult:
    variant = context.partition_key
    params, model_params, bands = training.params(), ModelParams(), VARIANT_BANDS[variant]
    with storage.local_input(TRAINING_FOLDER, "train.npz") as path:
        train = load_patchset(path).select(bands)
    with storage.local_input(TRAINING_FOLDER, "validation.npz") as path:
        val = load_patchset(path).select(bands)

    def log_epoch(record: EpochMetrics) -> None:
        context.log.info(f"{variant} epoch {record.epoch}: loss {record.train_loss:.4f}, F1 {record.f1:.3f}")
        context.log_event(
            AssetObservation(asset_key=context.asset_key, partition=variant, metadata=as_metadata(record))
        )

    with gpu.exclusive():
        model, history = train_model(
            train,
            val,
            model_params,
            params,
            device=gpu.torch_device(),
            on_epoch=log_epoch,
            autocast_dtype=gpu.training_autocast_dtype(),
        )
    config = checkpoint_config(
        name=f"{variant}_{training.preset}",
        model_params=model_params,
        training_params=params,
        bands=bands,
        normalisation=StackParams().normalisation,
        training_scene_ids=train.scene_ids,
        validation_scene_ids=val.scene_ids,
        history=history,
    )
    with storage.atomic_output(MODELS_FOLDER, f"{variant}.pt") as local:
        save_checkpoint(local, model, config)
    best = best_epoch(history)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(storage.path(MODELS_FOLDER, f"{variant}.pt"))),
            "bands": MetadataValue.json(list(bands)),
            "best_epoch": best.epoch,
            "precision": best.precision,
            "recall": best.recall,
            "f1": best.f1,
            "iou": best.iou,
            "epochs": markdown_table([as_metadata(record) for record in history]),
            "training": MetadataValue.json(as_metadata(params)),
            "device": MetadataValue.json(gpu.describe()),
        }
    )


TRAINING_ASSETS = [training_data, model_checkpoint]
