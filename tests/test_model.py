"""Training data, model, loss, augmentation, training loop and checkpoints (design stage 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from affine import Affine
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from darts_core.model import (
    AUGMENTATIONS,
    GEOMETRIC_AUGMENTATIONS,
    PHOTOMETRIC_AUGMENTATIONS,
    CheckpointError,
    augment,
    build_model,
    check_bands,
    checkpoint_config,
    evaluate_model,
    focal_loss,
    import_smp_checkpoint,
    load_checkpoint,
    save_checkpoint,
    train_model,
)
from darts_core.params import BAND_ORDER_NOTCVIS, BAND_ORDER_TCVIS, ModelParams, StackParams, TrainingParams
from darts_core.rasters import Grid, write_geotiff
from darts_core.stack import write_stack_geotiff
from darts_core.training_data import (
    IGNORE,
    PatchSet,
    build_training_data,
    cut_patches,
    load_patchset,
    read_labels,
    save_patchset,
)

SMALL_MODEL = ModelParams(encoder="resnet18", decoder_channels=(32, 16, 8))
UTM = "EPSG:32608"
LABELS = "labels/ML_training_labels/TrainingLabel_RTS_PlanetScope_Nitze_iteration{it}/" + (
    "TrainingLabel_RTS_PlanetScope_Nitze_iteration{it}.gpkg"
)


def tiny_params(**changes) -> TrainingParams:
    values = {"patch_size": 32, "patch_stride": 32, "epochs": 2, "batch_size": 8, "min_valid_fraction": 0.5}
    return TrainingParams(**{**values, **changes})


# --- labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iteration", "label_dtype", "invalid"),
    [("001", "int64", 4), ("003", "float64", 2), ("005", "object", 2), ("006", "int64", 0)],
)
def test_read_labels_repairs_the_real_darts_labels(shared_data: Path, iteration, label_dtype, invalid):
    path = shared_data / LABELS.format(it=iteration)
    raw = gpd.read_file(path)
    assert str(raw["label"].dtype) == label_dtype and int((~raw.is_valid).sum()) == invalid

    labels = read_labels(path)

    assert list(labels.columns) == ["image_id", "geometry"] and labels.crs == raw.crs
    assert labels.attrs["repaired_geometries"] == invalid and labels.attrs["dropped_geometries"] == 0
    assert len(labels) == len(raw)  # NaN / "1" labels are positives too: nothing dropped
    assert labels.is_valid.all() and not labels.is_empty.any()
    assert set(labels.geom_type) <= {"Polygon", "MultiPolygon"}
    assert labels["image_id"].map(type).eq(str).all()
    repaired = labels.geometry[~raw.is_valid.to_numpy()]
    assert (repaired.to_crs("EPSG:3413").area > 0).all()


def test_read_labels_keeps_crs_and_polygonal_parts_of_demo_schema(tmp_path):
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    collection = shapely.GeometryCollection([box(20, 20, 30, 30), shapely.LineString([(0, 0), (5, 5)])])
    frame = gpd.GeoDataFrame(
        {"image_id": ["a", "a", "b", "b"], "label": [1, 1, 1, 1],
         "target": ["Retrogressive Thaw Slumps", "Active Layer Detachment Slides"] * 2},
        geometry=[bowtie, collection, shapely.LineString([(0, 0), (1, 1)]), Polygon()],
        crs=UTM,
    )  # fmt: skip
    frame.to_file(tmp_path / "demo_training_labels.gpkg")

    labels = read_labels(tmp_path / "demo_training_labels.gpkg")

    assert labels.crs == UTM and list(labels["image_id"]) == ["a", "a"]
    assert labels.geometry.iloc[0].area == pytest.approx(50.0) and labels.geometry.iloc[1].equals(box(20, 20, 30, 30))
    assert labels.attrs["dropped_geometries"] == 2


def test_read_labels_reads_the_demo_region_labels(tmp_path):
    from darts_core.demo_region import synthesise_demo_region

    region = synthesise_demo_region(tmp_path / "demo")
    labels = read_labels(region.training_labels)
    labelled = {scene.item_id for scene in region.scenes if scene.has_labels}
    assert len(labels) > 0 and set(labels["image_id"]) <= labelled and labels.is_valid.all()


# --- patches ---------------------------------------------------------------------------------------------


TRANSFORM = from_origin(500_000, 7_500_000, 3, 3)


def scene_arrays(height=100, width=100, invalid_cols=40):
    rng = np.random.default_rng(0)
    stack = rng.uniform(0.1, 1.0, (10, height, width)).astype(np.float32)
    valid = np.ones((height, width), dtype=bool)
    valid[:, :invalid_cols] = False
    stack[:, ~valid] = 0
    return stack, valid


def pixel_box(row0, col0, row1, col1, transform: Affine = TRANSFORM):
    (x0, y0), (x1, y1) = transform @ (col0, row0), transform @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_cut_patches_ignores_invalid_pixels_and_drops_sparse_patches():
    stack, valid = scene_arrays(invalid_cols=50)
    labels = gpd.GeoSeries([pixel_box(50, 60, 60, 80)], crs=UTM)

    patches = cut_patches(stack, valid, labels, TRANSFORM, tiny_params(), "scene")

    # origins 0, 32, 64, 68 per axis; columns 0 (no valid) and 32 (14/32 valid) dropped, 64 and 68 kept
    assert len(patches) == 4 * 2 and patches.scene_ids == ["scene"] * 8
    assert patches.inputs.dtype == np.float32 and patches.targets.dtype == np.uint8
    assert patches.bands == BAND_ORDER_TCVIS and patches.inputs.shape == (8, 10, 32, 32)
    full_targets = np.zeros((100, 100), dtype=np.uint8)
    full_targets[50:60, 60:80] = 1
    full_targets[~valid] = IGNORE
    origins = [(row, col) for row in (0, 32, 64, 68) for col in (64, 68)]
    for patch, targets, (row, col) in zip(patches.inputs, patches.targets, origins, strict=True):
        np.testing.assert_array_equal(targets, full_targets[row : row + 32, col : col + 32])
        np.testing.assert_array_equal(patch, stack[:, row : row + 32, col : col + 32])
    assert (patches.targets == 1).sum() > 0


def test_cut_patches_pads_small_scenes_and_keeps_ignore_where_invalid():
    stack, valid = scene_arrays(height=20, width=30, invalid_cols=5)
    params = tiny_params(min_valid_fraction=0.4)  # 20 x 25 valid of 32 x 32
    patches = cut_patches(stack, valid, gpd.GeoSeries([], crs=UTM), TRANSFORM, params, "small")
    assert len(cut_patches(stack, valid, gpd.GeoSeries([], crs=UTM), TRANSFORM, tiny_params(), "small")) == 0
    assert len(patches) == 1
    assert (patches.targets[0][:, :5] == IGNORE).all() and (patches.targets[0][20:] == IGNORE).all()
    assert (patches.targets[0][:20, 5:30] == 0).all()


def write_scene(folder: Path, scene_id: str, origin_x: float, invalid_cols: int = 0) -> tuple[str, Path, Path]:
    stack, valid = scene_arrays(64, 64, invalid_cols)
    transform = from_origin(origin_x, 7_500_000, 3, 3)
    stack_path, mask_path = folder / f"{scene_id}_stack.tif", folder / f"{scene_id}_valid.tif"
    write_stack_geotiff(stack_path, stack, UTM, transform, StackParams())
    write_geotiff(mask_path, valid.astype(np.uint8), Grid(UTM, transform, 64, 64), ["valid"])
    return scene_id, stack_path, mask_path


def test_build_training_data_keeps_validation_scenes_apart(tmp_path):
    scenes = [write_scene(tmp_path, f"s{i}", 500_000 + 1000 * i) for i in range(4)]
    footprints = {scene_id: pixel_box(10, 10, 20, 30, from_origin(500_000 + 1000 * i, 7_500_000, 3, 3))
                  for i, (scene_id, _, _) in enumerate(scenes)}  # fmt: skip
    labels = gpd.GeoDataFrame(
        {"image_id": ["s0", "s1", "s2"]}, geometry=[footprints[s] for s in ("s0", "s1", "s2")], crs=UTM
    ).to_crs("EPSG:4326")

    train, val = build_training_data(scenes, labels, ["s1"], tiny_params(), negative_scene_ids=["s3"])

    assert set(val.scene_ids) == {"s1"} and set(train.scene_ids) == {"s0", "s2", "s3"}
    assert len(train) == 3 * 4 and len(val) == 4 and train.bands == val.bands == BAND_ORDER_TCVIS
    positives = {scene: int((train.targets[np.array(train.scene_ids) == scene] == 1).sum()) for scene in ("s0", "s3")}
    assert positives["s3"] == 0 and abs(positives["s0"] - 200) <= 20  # reprojection round trip: ~10 x 20 px
    with pytest.raises(ValueError, match="s9"):
        build_training_data(scenes, labels, ["s9"], tiny_params())


def test_patchset_round_trips_without_pickles(tmp_path):
    stack, valid = scene_arrays()
    patches = cut_patches(stack, valid, gpd.GeoSeries([], crs=UTM), TRANSFORM, tiny_params(), "x")
    save_patchset(tmp_path / "train.npz", patches)
    loaded = load_patchset(tmp_path / "train.npz")
    np.testing.assert_array_equal(loaded.inputs, patches.inputs)
    np.testing.assert_array_equal(loaded.targets, patches.targets)
    assert loaded.scene_ids == patches.scene_ids and loaded.bands == patches.bands
    empty = PatchSet.empty(BAND_ORDER_NOTCVIS, 32)
    save_patchset(tmp_path / "empty.npz", empty)
    loaded_empty = load_patchset(tmp_path / "empty.npz")
    assert len(loaded_empty) == 0 and loaded_empty.bands == empty.bands
    np.savez(tmp_path / "other.npz", inputs=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        load_patchset(tmp_path / "other.npz")


# --- loss ---------------------------------------------------------------------------------------------------


def hand_focal_loss(logits, targets, gamma):
    keep = targets != IGNORE
    p, y = 1 / (1 + np.exp(-logits[keep])), targets[keep].astype(float)
    p_t = p * y + (1 - p) * (1 - y)
    return float(np.mean(-((1 - p_t) ** gamma) * np.log(p_t)))


def test_focal_loss_equals_hand_computation_and_ignores_ignored_pixels():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64) * 3
    targets = torch.randint(0, 2, (2, 8, 8), generator=generator, dtype=torch.uint8)
    targets[0, :3] = IGNORE
    for gamma in (0.0, 2.0):
        expected = hand_focal_loss(logits.squeeze(1).numpy(), targets.numpy(), gamma)
        assert float(focal_loss(logits, targets, gamma)) == pytest.approx(expected, rel=1e-12)

    changed = logits.clone().requires_grad_(True)
    with torch.no_grad():
        changed[0, 0, :3] = 50.0
    loss = focal_loss(changed, targets, 2.0)
    assert float(loss.detach()) == float(focal_loss(logits, targets, 2.0))
    loss.backward()
    assert (changed.grad[0, 0, :3] == 0).all() and (changed.grad[0, 0, 3:] != 0).any()


# --- augmentation ------------------------------------------------------------------------------------------


def augmentation_batch(count=200, size=16):
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(count, 10, size, size, generator=generator) + 0.1
    targets = torch.randint(0, 2, (count, size, size), generator=generator, dtype=torch.uint8)
    return inputs, targets


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_each_augmentation_changes_inputs_with_its_probability(name):
    inputs, targets = augmentation_batch()
    out, _ = augment(inputs, targets, torch.Generator().manual_seed(4), names=[name])
    changed = (out != inputs).flatten(1).any(dim=1).float().mean()
    assert 0.38 <= float(changed) <= 0.62
    if name in PHOTOMETRIC_AUGMENTATIONS:  # terrain and TCVIS untouched; reflectance bands only for these two
        np.testing.assert_array_equal(out[:, 5:], inputs[:, 5:])
        if name != "blur":
            np.testing.assert_array_equal(out[:, 0], inputs[:, 0])


def test_geometric_augmentations_and_cutout_keep_inputs_and_targets_aligned():
    inputs, targets = augmentation_batch(count=64)
    inputs = targets[:, None].float().repeat(1, 10, 1, 1) * torch.arange(1, 11.0)[None, :, None, None] + 0.5
    out, out_targets = augment(inputs, targets, torch.Generator().manual_seed(5),
                               names=[*GEOMETRIC_AUGMENTATIONS, "cutout"])  # fmt: skip
    assert not torch.equal(out, inputs)
    kept = out_targets != IGNORE
    expected = out_targets[:, None].float() * torch.arange(1, 11.0)[None, :, None, None] + 0.5
    assert torch.equal(out.permute(1, 0, 2, 3)[:, kept], expected.permute(1, 0, 2, 3)[:, kept])
    assert (out.permute(1, 0, 2, 3)[:, ~kept] == 0).all() and (~kept).any()


def test_photometric_augmentations_keep_invalid_pixels_zero_and_are_seeded():
    inputs, targets = augmentation_batch(count=32)
    inputs[:, :, :4] = 0
    first = augment(inputs, targets, torch.Generator().manual_seed(6), names=list(PHOTOMETRIC_AUGMENTATIONS))
    again = augment(inputs, targets, torch.Generator().manual_seed(6), names=list(PHOTOMETRIC_AUGMENTATIONS))
    assert (first[0][:, :, :4] == 0).all() and torch.equal(first[0], again[0]) and torch.equal(first[1], targets)


# --- training -----------------------------------------------------------------------------------------------


def easy_patches(count: int, seed: int, size: int = 32) -> PatchSet:
    """Bright squares (all bands high) on a dark noisy background; invalid strips are IGNORE."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(0.05, 0.3, (count, 10, size, size)).astype(np.float32)
    targets = np.zeros((count, size, size), dtype=np.uint8)
    for index in range(count):
        row, col, side = *rng.integers(0, size - 12, 2), rng.integers(6, 12)
        inputs[index, :, row : row + side, col : col + side] += 0.7
        targets[index, row : row + side, col : col + side] = 1
    inputs[:, :, :, :2], targets[:, :, :2] = 0, IGNORE
    return PatchSet(inputs, targets, [f"scene{i % 3}" for i in range(count)], BAND_ORDER_TCVIS)


def test_training_decreases_loss_records_metrics_and_keeps_the_best_epoch(tmp_path):
    train, val = easy_patches(48, seed=0), easy_patches(16, seed=1)
    params = tiny_params(epochs=3, batch_size=8, learning_rate=3e-3)
    reported = []

    model, history = train_model(train, val, SMALL_MODEL, params, on_epoch=reported.append)

    assert [record.epoch for record in history] == [1, 2, 3] and reported == history
    assert history[-1].train_loss < history[0].train_loss
    assert [record.lr for record in history] == pytest.approx([3e-3 * 0.9**e for e in range(3)])
    for record in history:
        assert all(0 <= value <= 1 for value in (record.precision, record.recall, record.f1, record.iou))
        assert record.seconds > 0 and np.isfinite(record.val_loss)
    best = max(history, key=lambda record: (record.f1, -record.val_loss))
    val_loss, scores = evaluate_model(model, val, params)
    assert val_loss == pytest.approx(best.val_loss, rel=1e-5) and scores["f1"] == pytest.approx(best.f1, abs=1e-6)
    assert all(p.is_contiguous() for p in model.parameters())  # trained channels-last, returned contiguous
    save_checkpoint(tmp_path / "trained.pt", model, make_config(SMALL_MODEL, history=history))
    loaded, config = load_checkpoint(tmp_path / "trained.pt")
    with torch.inference_mode():
        probabilities = [torch.sigmoid(m(torch.from_numpy(val.inputs[:4]))) for m in (model, loaded)]
    assert torch.equal(*probabilities) and config["metrics"][0] == asdict(history[0])
    assert config["best_epoch"] == best.epoch


def test_training_is_seeded():
    train, val = easy_patches(16, seed=0), easy_patches(8, seed=1)
    runs = [train_model(train, val, SMALL_MODEL, tiny_params(epochs=1))[1][0] for _ in range(2)]
    assert (runs[0].train_loss, runs[0].val_loss, runs[0].f1) == (runs[1].train_loss, runs[1].val_loss, runs[1].f1)


def test_mixed_precision_training_keeps_fp32_weights_and_learns():
    """bf16 autocast (TorchDevice.training_precision): weights, optimiser and loss stay fp32, the loss falls."""
    train, val = easy_patches(32, seed=0), easy_patches(8, seed=1)
    params = tiny_params(epochs=2, batch_size=8, learning_rate=3e-3)
    model, history = train_model(train, val, SMALL_MODEL, params, autocast_dtype=torch.bfloat16)
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert history[-1].train_loss < history[0].train_loss and np.isfinite(history[-1].val_loss)


# --- checkpoints ----------------------------------------------------------------------------------------


def make_config(model_params: ModelParams, bands=BAND_ORDER_TCVIS, history=()) -> dict:
    return checkpoint_config(
        name="tcvis",
        model_params=model_params,
        training_params=tiny_params(),
        bands=bands,
        normalisation=StackParams().normalisation,
        training_scene_ids=["s0", "s2"],
        validation_scene_ids=["s1"],
        history=history,
    )


def seeded_model(model_params: ModelParams, in_channels: int = 10) -> torch.nn.Module:
    torch.manual_seed(11)
    model = build_model(model_params, in_channels)
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


FRESH_PROCESS = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from darts_core.model import load_checkpoint
    torch.set_num_threads(int(sys.argv[3]))
    model, config = load_checkpoint(sys.argv[1])
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(torch.from_numpy(np.load(sys.argv[2])))).numpy()
    np.save(sys.argv[2].replace("input", "output"), probabilities)
    """
)


def test_checkpoint_loaded_in_a_fresh_process_gives_identical_probabilities(tmp_path):
    model = seeded_model(ModelParams())  # the real architecture
    inputs = np.random.default_rng(2).uniform(0, 1, (2, 10, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(inputs))).numpy()
    save_checkpoint(tmp_path / "tcvis.pt", model, make_config(ModelParams()))
    np.save(tmp_path / "input.npy", inputs)

    command = [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "tcvis.pt"), str(tmp_path / "input.npy")]
    subprocess.run([*command, str(torch.get_num_threads())], check=True, cwd=Path(__file__).parents[1])

    np.testing.assert_array_equal(np.load(tmp_path / "output.npy"), expected)
    _, config = load_checkpoint(tmp_path / "tcvis.pt")
    assert config["bands"] == list(BAND_ORDER_TCVIS) and config["architecture"]["decoder_channels"] == [256, 128, 64]
    assert config["normalisation"]["ndvi"] == {"offset": 1.0, "scale": 2.0} and "torch" in config["versions"]


def test_bad_checkpoints_raise_errors_naming_the_file(tmp_path):
    model = seeded_model(SMALL_MODEL)
    config = make_config(SMALL_MODEL)
    save_checkpoint(tmp_path / "good.pt", model, config)

    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated, corrupt"):
        load_checkpoint(tmp_path / "truncated.pt")

    torch.save(model.state_dict(), tmp_path / "plain_state_dict.pt")
    with pytest.raises(CheckpointError, match="plain_state_dict.pt is not a DARTS checkpoint"):
        load_checkpoint(tmp_path / "plain_state_dict.pt")

    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    payload["config"]["architecture"]["decoder_channels"] = [64, 32, 16]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: state dict does not match"):
        load_checkpoint(tmp_path / "mismatch.pt")

    with pytest.raises(ValueError, match="good.pt expects 10 bands"):
        check_bands(config, BAND_ORDER_NOTCVIS, checkpoint=tmp_path / "good.pt")
    check_bands(config, BAND_ORDER_TCVIS, tmp_path / "good.pt", StackParams().normalisation)
    with pytest.raises(ValueError, match="normalisation"):
        wrong = {band: StackParams().normalisation["slope"] for band in config["bands"]}
        check_bands(config, BAND_ORDER_TCVIS, "good.pt", wrong)
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "incomplete.pt", model, {"bands": config["bands"]})


def test_import_smp_checkpoint_strips_prefixes_and_validates_keys(tmp_path):
    model = seeded_model(SMALL_MODEL, in_channels=7)
    config = make_config(SMALL_MODEL, bands=BAND_ORDER_NOTCVIS)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "external.ckpt")

    import_smp_checkpoint(tmp_path / "external.ckpt", config, tmp_path / "notcvis.pt")

    loaded, loaded_config = load_checkpoint(tmp_path / "notcvis.pt")
    assert loaded_config["bands"] == list(BAND_ORDER_NOTCVIS)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("segmentation_head")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial.pth: state dict does not match.*segmentation_head"):
        import_smp_checkpoint(tmp_path / "partial.pth", config, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()


def test_build_model_outputs_logits_of_the_patch_size():
    model = build_model(ModelParams(), in_channels=10).eval()
    with torch.inference_mode():
        logits = model(torch.zeros(1, 10, 64, 64))
    assert logits.shape == (1, 1, 64, 64)
