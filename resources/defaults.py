"""The code location's resources, configured from the environment."""

import os

from resources.aux_sources import LocalMosaicSource
from resources.duckdb import DartsDuckDB
from resources.gpu import TorchDevice
from resources.stac import StacCatalogue
from resources.storage import StorageRoot, darts_home
from resources.training import TrainingSetup
from resources.validation import ValidationSetup

STAC_API_URL_ENV = "DARTS_STAC_API_URL"
STORAGE_ROOT_ENV = "DARTS_STORAGE_ROOT"


def default_resources() -> dict:
    """The resources of the code location, configured from the environment.

    ``DARTS_HOME`` (default ./darts_home) holds the local catalogue and instance; ``DARTS_STORAGE_ROOT``
    (default ``$DARTS_HOME``) may point outputs at ``gs://bucket/prefix``; ``DARTS_STAC_API_URL`` selects
    an external STAC API instead of the local stac-geoparquet catalogue; ``DARTS_AUX_DIR`` (default the demo
    region's ``aux/``) holds ``arcticdem_mosaic.vrt``, ``tcvis.tif`` and ``landcover.tif``.
    """
    return {
        "storage": StorageRoot(root=os.environ.get(STORAGE_ROOT_ENV) or str(darts_home())),
        "stac_catalogue": StacCatalogue(api_url=os.environ.get(STAC_API_URL_ENV, "")),
        "aux_layers": LocalMosaicSource(),
        "gpu": TorchDevice(),
        "training": TrainingSetup(),
        "duckdb": DartsDuckDB(),
        "validation": ValidationSetup(),
    }
