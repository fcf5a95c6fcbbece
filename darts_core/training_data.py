"""Training patches from input stacks and label polygons (design stage 5, paper "Label Creation").

Labels: the DARTS ``ML_training_labels`` GeoPackages (and the demo's copy of their schema). DARTS has a
single positive class: every label polygon (RTS and ALD scar zones alike) is positive, whatever its
``label``/``target`` value (``label`` is 1, 1.0, "1" or NaN depending on the iteration and never a class
code). Everything else inside the labelled scene is background; pixels where the scene is invalid get
``IGNORE`` (left out of the loss and the metrics, never counted as background).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from darts_core.atomic import atomic_path
from darts_core.params import BAND_ORDER_TCVIS, StackParams, TrainingParams
from darts_core.stack import read_stack_geotiff

IGNORE = 255
POSITIVE = 1
PATCHSET_FORMAT = "darts-patchset-v1"
LABEL_COLUMNS = ("image_id", "geometry")
INVALID_VALUE = StackParams().invalid_value
POLYGONAL = ("Polygon", "MultiPolygon")

SceneFiles = tuple[str, Path | str, Path | str | None]  # (scene id, input stack GeoTIFF, valid-mask GeoTIFF)


# --- labels ------------------------------------------------------------------------------------------


def read_labels(path: Path | str) -> gpd.GeoDataFrame:
    """Label polygons (columns image_id, geometry; CRS kept) with invalid geometries repaired.

    Invalid geometries are repaired with ``shapely.make_valid`` (structure method) and only their polygonal
    parts kept; null, empty and zero-area geometries are dropped. ``attrs`` records ``repaired_geometries``
    and ``dropped_geometries`` (for asset metadata).
    """
    frame = gpd.read_file(path)
    missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{Path(path).name}: label file lacks the columns {missing} (has {list(frame.columns)})")
    repaired = sum(geometry is not None and not geometry.is_valid for geometry in frame.geometry)
    geometries = [polygonal_part(geometry) for geometry in frame.geometry]
    keep = np.array([geometry is not None for geometry in geometries], dtype=bool)
    labels = gpd.GeoDataFrame(
        {"image_id": frame["image_id"].astype(str).str.strip().to_numpy()[keep]},
        geometry=[geometry for geometry in geometries if geometry is not None],
        crs=frame.crs,
    )
    labels.attrs = {"repaired_geometries": repaired, "dropped_geometries": int((~keep).sum())}
    return labels


def polygonal_part(geometry: BaseGeometry | None) -> BaseGeometry | None:
    """The valid (Multi)Polygon part of ``geometry``; None when nothing with an area is left."""
    if geometry is None or geometry.is_empty:
        return None
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    polygons = [part for part in _flat_parts(geometry) if part.geom_type == "Polygon" and part.area > 0]
    if not polygons:
        return None
    return polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)


def _flat_parts(geometry: BaseGeometry) -> Iterable[BaseGeometry]:
    for part in shapely.get_parts(geometry):
        if part.geom_type in ("MultiPolygon", "GeometryCollection"):
            yield from _flat_parts(part)
        else:
            yield part


# --- patches -------------------------------------------------------------------------------------------


@dataclass
class PatchSet:
    """Training patches: inputs float32 (N, C, p, p), targets uint8 (N, p, p) in {0, 1, IGNORE}."""

    inputs: np.ndarray
    targets: np.ndarray
    scene_ids: list[str]
    bands: tuple[str, ...]

    def __post_init__(self) -> None:
        count = len(self.scene_ids)
        if self.inputs.ndim != 4 or self.targets.ndim != 3 or len(self.inputs) != count or len(self.targets) != count:
            raise ValueError(
                f"inconsistent PatchSet: inputs {self.inputs.shape}, targets {self.targets.shape}, {count} scene ids"
            )
        if self.inputs.shape[1] != len(self.bands) or self.inputs.shape[2:] != self.targets.shape[1:]:
            raise ValueError(f"PatchSet inputs {self.inputs.shape} do not match bands {self.bands} / targets")

    def __len__(self) -> int:
        return len(self.scene_ids)

    @property
    def patch_size(self) -> int:
        return int(self.inputs.shape[-1])

    @classmethod
    def empty(cls, bands: Sequence[str], patch_size: int) -> PatchSet:
        inputs = np.zeros((0, len(bands), patch_size, patch_size), dtype=np.float32)
        return cls(inputs, np.zeros((0, patch_size, patch_size), dtype=np.uint8), [], tuple(bands))

    @classmethod
    def concatenate(cls, parts: Sequence[PatchSet], bands: Sequence[str], patch_size: int) -> PatchSet:
        """One PatchSet of ``parts`` (all with ``bands``); empty when there are none."""
        if not parts:
            return cls.empty(bands, patch_size)
        for part in parts:
            if part.bands != tuple(bands):
                raise ValueError(f"patch bands {part.bands} differ from {tuple(bands)}")
        return cls(
            np.concatenate([part.inputs for part in parts]),
            np.concatenate([part.targets for part in parts]),
            [scene_id for part in parts for scene_id in part.scene_ids],
            tuple(bands),
        )

    def select(self, bands: Sequence[str]) -> PatchSet:
        """The same patches with only ``bands`` (by name, in that order), e.g. the notcvis model's 7."""
        missing = [band for band in bands if band not in self.bands]
        if missing:
            raise ValueError(f"patches have no bands {missing} (they have {self.bands})")
        indexes = [self.bands.index(band) for band in bands]
        return PatchSet(self.inputs[:, indexes], self.targets, self.scene_ids, tuple(bands))

    def summary(self) -> dict[str, float | int]:
        """Counts for asset metadata: patches, scenes, positive / background / ignored pixel fractions."""
        total = max(self.targets.size, 1)
        return {
            "patches": len(self),
            "scenes": len(set(self.scene_ids)),
            "positive_fraction": float((self.targets == POSITIVE).sum() / total),
            "background_fraction": float((self.targets == 0).sum() / total),
            "ignored_fraction": float((self.targets == IGNORE).sum() / total),
        }


def rasterise_labels(labels_in_scene_crs: gpd.GeoSeries, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W): 1 inside any label polygon (pixel centres, all_touched=False), else 0."""
    shapes = [(geometry, POSITIVE) for geometry in labels_in_scene_crs if geometry and not geometry.is_empty]
    if not shapes:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, all_touched=False, dtype="uint8")


def patch_origins(length: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride`` plus one flush with the far edge (full coverage)."""
    last = max(length - patch_size, 0)
    origins = list(range(0, last + 1, stride))
    if origins[-1] != last:
        origins.append(last)
    return origins


def cut_patches(
    stack: np.ndarray,
    valid: np.ndarray,
    labels_in_scene_crs: gpd.GeoSeries,
    transform: Affine,
    params: TrainingParams,
    scene_id: str,
    bands: Sequence[str] | None = None,
) -> PatchSet:
    """Patches of one scene: labels rasterised, IGNORE where invalid, sparse-valid patches dropped.

    Tiles of ``params.patch_size`` every ``params.patch_stride`` (plus edge-flush ones); a scene smaller
    than a patch is padded with invalid pixels. ``bands`` defaults to the first C names of BAND_ORDER_TCVIS.
    """
    bands = tuple(bands) if bands is not None else BAND_ORDER_TCVIS[: stack.shape[0]]
    if valid.shape != stack.shape[1:]:
        raise ValueError(f"{scene_id}: valid mask {valid.shape} does not match the stack {stack.shape}")
    targets = rasterise_labels(labels_in_scene_crs, transform, valid.shape)
    targets[~valid] = IGNORE
    stack, targets, valid = _pad_to_patch(stack, targets, valid, params.patch_size)
    size = params.patch_size
    windows = [
        (row, col)
        for row in patch_origins(valid.shape[0], size, params.patch_stride)
        for col in patch_origins(valid.shape[1], size, params.patch_stride)
        if valid[row : row + size, col : col + size].mean() >= params.min_valid_fraction
    ]
    if not windows:
        return PatchSet.empty(bands, size)
    inputs = np.stack([stack[:, row : row + size, col : col + size] for row, col in windows])
    patch_targets = np.stack([targets[row : row + size, col : col + size] for row, col in windows])
    return PatchSet(inputs.astype(np.float32, copy=False), patch_targets, [scene_id] * len(windows), bands)


def _pad_to_patch(
    stack: np.ndarray, targets: np.ndarray, valid: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pad_rows, pad_cols = max(size - valid.shape[0], 0), max(size - valid.shape[1], 0)
    if not (pad_rows or pad_cols):
        return stack, targets, valid
    pad = ((0, pad_rows), (0, pad_cols))
    return (
        np.pad(stack, ((0, 0), *pad), constant_values=INVALID_VALUE),
        np.pad(targets, pad, constant_values=IGNORE),
        np.pad(valid, pad, constant_values=False),
    )


# --- scenes -> train / validation ----------------------------------------------------------------


def build_training_data(
    scenes: Sequence[SceneFiles],
    labels: gpd.GeoDataFrame,
    validation_scene_ids: Sequence[str],
    params: TrainingParams,
    negative_scene_ids: Collection[str] = (),
) -> tuple[PatchSet, PatchSet]:
    """(train, validation) patches of the scenes that carry labels.

    A scene is used when ``labels`` has polygons with its image id, or when it is listed in
    ``negative_scene_ids`` (labelled images without any RTS/ALD, e.g. the DARTS ImageFootprints without
    polygons: all background). Labels are reprojected to each scene's CRS. Validation scenes go only into
    the validation set; a validation id without a usable scene is an error (the set is fixed by design).
    """
    labelled = set(labels["image_id"]) | set(negative_scene_ids)
    used = [scene for scene in scenes if scene[0] in labelled]
    missing = sorted(set(validation_scene_ids) - {scene[0] for scene in used})
    if missing:
        raise ValueError(f"validation scenes without an input stack or labels: {missing}")
    train_parts, val_parts, bands = [], [], None
    for scene_id, stack_path, valid_path in used:
        patches = scene_patches(scene_id, stack_path, valid_path, labels, params)
        if bands is not None and patches.bands != bands:
            raise ValueError(f"{scene_id}: stack bands {patches.bands} differ from the other scenes' {bands}")
        bands = patches.bands
        (val_parts if scene_id in validation_scene_ids else train_parts).append(patches)
    bands = bands or ()
    return (
        PatchSet.concatenate([p for p in train_parts if len(p)], bands, params.patch_size),
        PatchSet.concatenate([p for p in val_parts if len(p)], bands, params.patch_size),
    )


def scene_patches(
    scene_id: str,
    stack_path: Path | str,
    valid_mask_path: Path | str | None,
    labels: gpd.GeoDataFrame,
    params: TrainingParams,
) -> PatchSet:
    """Patches of one scene read from its stack GeoTIFF, valid mask GeoTIFF and the label polygons."""
    stack, profile, bands, _ = read_stack_geotiff(Path(stack_path))
    valid = scene_valid_mask(stack, valid_mask_path)
    scene_labels = labels.loc[labels["image_id"] == scene_id].geometry
    if len(scene_labels) and labels.crs is not None:
        scene_labels = scene_labels.to_crs(profile["crs"])
    return cut_patches(stack, valid, scene_labels, profile["transform"], params, scene_id, bands)


def scene_valid_mask(stack: np.ndarray, valid_mask_path: Path | str | None) -> np.ndarray:
    """Valid = the scene's valid mask (band 1 != 0, when given) and not invalid in every stack band.

    The second part catches pixels the stack marked invalid (all bands = the invalid value) because an
    auxiliary layer had no data there, which the Planet valid mask does not know.
    """
    valid = (stack != INVALID_VALUE).any(axis=0) & np.isfinite(stack).all(axis=0)
    if valid_mask_path is None:
        return valid
    with rasterio.open(valid_mask_path) as source:
        mask = source.read(1) != 0
    if mask.shape != valid.shape:
        raise ValueError(f"{Path(valid_mask_path).name}: mask {mask.shape} does not match the stack {valid.shape}")
    return valid & mask


# --- storage ---------------------------------------------------------------------------------------------


def save_patchset(path: Path | str, patchset: PatchSet) -> None:
    """Write ``patchset`` atomically as a compressed .npz of plain arrays (no pickles)."""
    with atomic_path(Path(path)) as temp_path, open(temp_path, "wb") as sink:
        np.savez_compressed(
            sink,
            format=np.array(PATCHSET_FORMAT),
            inputs=patchset.inputs,
            targets=patchset.targets,
            scene_ids=np.array(patchset.scene_ids, dtype=str),
            bands=np.array(patchset.bands, dtype=str),
        )


def load_patchset(path: Path | str) -> PatchSet:
    """A PatchSet written by :func:`save_patchset` (read with ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as archive:
        if "format" not in archive.files or str(archive["format"]) != PATCHSET_FORMAT:
            raise ValueError(f"{Path(path).name} is not a DARTS patch set ({PATCHSET_FORMAT})")
        return PatchSet(
            inputs=archive["inputs"],
            targets=archive["targets"],
            scene_ids=[str(scene_id) for scene_id in archive["scene_ids"]],
            bands=tuple(str(band) for band in archive["bands"]),
        )
