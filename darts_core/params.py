"""Every parameter of the DARTS method, defined once (design brief, "Stages and parameters").

Assets record these objects in their metadata and raster tags; nothing else hard-codes their values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
