"""Every parameter of the DARTS method, defined once (design brief, "Stages and parameters").

Assets record these objects in their metadata and raster tags; nothing else hard-codes their values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class PlanetParams:
    """Stage 2: PlanetScope input."""

    reflectance_scale: float = 10000.0  # SR GeoTIFF value = reflectance x 10000
    sr_nodata: int = 0
    # Scene edges where visible bands are missing carry the value 1 (reflectance 1e-4) next to a real NIR value,
    # i.e. a fake NDVI ~ 1 (a 12 px strip of the real 2016 PSScene): a visible band at this value = no data.
    sr_missing_visible_value: int | None = 1
    # udm2 bands (1-based): 1 clear, 2 snow, 3 shadow, 4 light haze, 5 heavy haze, 6 cloud,
    # 7 confidence, 8 unusable
    udm2_clear_band: int = 1
    udm2_excluding_bands: tuple[int, ...] = (2, 3, 5, 6)  # snow, shadow, heavy haze, cloud
    udm2_unusable_band: int = 8


@dataclass(frozen=True)
class TerrainParams:
    """Stage 3: auxiliary layers on the scene grid."""

    tpi_radius_m: float = 100.0  # disk radius of the relative-elevation mean (DARTS v1 code: radius)
    dem_buffer_m: float = 200.0  # DEM read around the scene so the disk and slope kernels see real data
    dem_resampling: str = "cubic"
    tcvis_resampling: str = "nearest"
    water_classes: tuple[int, ...] = (80,)  # ESA WorldCover permanent water bodies


BAND_ORDER_TCVIS: tuple[str, ...] = (
    "ndvi",
    "blue",
    "green",
    "red",
    "nir",
    "relative_elevation",
    "slope",
    "tc_brightness",
    "tc_greenness",
    "tc_wetness",
)
BAND_ORDER_NOTCVIS: tuple[str, ...] = BAND_ORDER_TCVIS[:7]


@dataclass(frozen=True)
class BandNormalisation:
    """normalised = (value + offset) / scale."""

    offset: float = 0.0
    scale: float = 1.0


def default_normalisation() -> dict[str, BandNormalisation]:
    optical = BandNormalisation(0.0, 0.3)  # reflectance / 0.3 (= raw / 3000)
    tcvis = BandNormalisation(0.0, 255.0)
    return {
        "ndvi": BandNormalisation(1.0, 2.0),
        "blue": optical,
        "green": optical,
        "red": optical,
        "nir": optical,
        "relative_elevation": BandNormalisation(50.0, 100.0),
        "slope": BandNormalisation(0.0, 90.0),
        "tc_brightness": tcvis,
        "tc_greenness": tcvis,
        "tc_wetness": tcvis,
    }


@dataclass(frozen=True)
class StackParams:
    """Stage 4: the model input stack."""

    bands: tuple[str, ...] = BAND_ORDER_TCVIS
    normalisation: dict[str, BandNormalisation] = field(default_factory=default_normalisation)
    invalid_value: float = 0.0


def as_metadata(params: object) -> dict:
    """A parameter object as plain JSON-able data (for asset metadata and raster tags)."""
    return asdict(params)


@dataclass(frozen=True)
class ModelParams:
    """Stage 5: the segmentation model (segmentation_models_pytorch)."""

    architecture: str = "UnetPlusPlus"
    encoder: str = "resnet34"
    encoder_depth: int = 3
    decoder_channels: tuple[int, ...] = (256, 128, 64)
    classes: int = 1


@dataclass(frozen=True)
class TrainingParams:
    """Stage 5: training. ``paper()`` is the DARTS v1 setting; ``demo()`` the small one (same code path)."""

    patch_size: int = 1024
    patch_stride: int = 512
    min_valid_fraction: float = 0.5  # patches with less valid data are dropped
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2  # AdamW default
    lr_gamma: float = 0.9  # ExponentialLR, stepped once per epoch
    focal_gamma: float = 2.0
    seed: int = 42

    @classmethod
    def paper(cls) -> TrainingParams:
        return cls()

    @classmethod
    def demo(cls) -> TrainingParams:
        # ~35 s per epoch per model on 2 CPU cores with the paper's architecture (measured)
        return cls(patch_size=128, patch_stride=128, epochs=5, batch_size=16)


@dataclass(frozen=True)
class InferenceParams:
    """Stage 6: patch inference."""

    patch_size: int = 1024
    overlap: int = 256
    batch_size: int = 8


@dataclass(frozen=True)
class CleaningParams:
    """Stage 7: ensemble and cleaning."""

    threshold: float = 0.5
    edge_zone_px: int = 10  # invalid pixels dilated by this, plus an image frame of this width
    min_object_px: int = 32
    max_water_fraction: float = 0.2
    connectivity: int = 8


@dataclass(frozen=True)
class ProductParams:
    """Stages 8-11: product naming and version columns."""

    dataset_name: str = "DARTS"
    dataset_version: str = "v1.0"
    model_version: str = "RTS_v6_ensemble_v3_filterWater"
    image_source: str = "PlanetScope"
    equal_area_crs: str = "EPSG:6931"  # NSIDC EASE-Grid 2.0 North (Lambert azimuthal equal area)
    level1_information: str = "RTS/ALD footprint - individual image - Level 1"
    level2_information: str = "RTS/ALD footprint - annually aggregated - Level 2"
    core_period: tuple[int, int] = (2021, 2023)
    coverage_simplify_m: float = 3.0  # footprint simplification before coverage unions: one PlanetScope pixel


@dataclass(frozen=True)
class ValidationParams:
    """Stage 12: object-level validation against reference datasets (paper Technical Validation, Tables 4/5).

    ``coverage_rule``: a reference feature (a point: its buffer) or a detection counts for a year when it
    "intersects" the year's coverage (the paper's Table 4 footnote: "Intersecting DARTS coverage"; also keeps
    detections at image edges, which the 3 m coverage simplification can shave), or lies "within" it.
    ``reference_years``: "all" compares every year with all reference features (the paper's validation sets
    2 and 3); "overlapping" only with those whose dates include the year (undated ones always count).
    """

    point_buffer_m: float = 500.0  # geodesic radius around point references (paper, validation set 3)
    point_buffer_vertices: int = 64  # vertices of a buffered point
    coverage_rule: Literal["intersects", "within"] = "intersects"
    reference_years: Literal["all", "overlapping"] = "all"
    region_hull_buffer_m: float = 0.0  # regions derived from references: convex hull of a region's features + this
    sd_ddof: int = 1  # standard deviation over years (Table 4): sample standard deviation

    def __post_init__(self) -> None:
        if self.coverage_rule not in ("intersects", "within"):
            raise ValueError(f"coverage_rule must be 'intersects' or 'within', got {self.coverage_rule!r}")
        if self.reference_years not in ("all", "overlapping"):
            raise ValueError(f"reference_years must be 'all' or 'overlapping', got {self.reference_years!r}")


@dataclass(frozen=True)
class RecurrenceParams:
    """Temporal-recurrence filter of Level-2 features (paper outlook, darts_core.recurrence)."""

    min_years: int = 2  # a kept feature is seen (intersecting features) in at least this many distinct years
    min_footprint_change: float = 0.0  # and differs by at least this 1 - IoU from another year's features (0: off)
    keep_untestable: bool = True  # keep features whose place was covered in fewer than min_years years
