"""Planet item ids: parsing, the scene -> year rule, and ids that are safe to use in paths.

Two id layouts exist (Planet Data API):

* PSScene     ``20230815_191951_90_24af``          (date_time[_centiseconds]_satellite)
* PSOrthoTile ``4577307_1468121_2021-07-21_2407``  (strip_gridcell_date_satellite)

Older PSScene ids have no centisecond part (``20160909_213104_0e19``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

PSSCENE_ID = re.compile(r"^(?P<date>\d{8})_(?P<time>\d{6})(?:_(?P<centis>\d{2}))?_(?P<satellite>[0-9a-f]{4})$")
PSORTHOTILE_ID = re.compile(
    r"^(?P<strip>\d+)_(?P<grid_cell>\d+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<satellite>[0-9a-f]{4})$"
)


class InvalidSceneIdError(ValueError):
    """A string that is not a Planet PSScene or PSOrthoTile item id."""


@dataclass(frozen=True)
class SceneId:
    """A parsed Planet item id."""

    item_id: str
    item_type: str  # "PSScene" or "PSOrthoTile"
    acquired_date: dt.date
    satellite_id: str

    @property
    def year(self) -> int:
        return self.acquired_date.year


def parse_scene_id(item_id: str) -> SceneId:
    """Parse a Planet item id; raise :class:`InvalidSceneIdError` naming the id if it is neither layout.

    Only ids matching one of the two layouts pass, so a parsed id never contains ``/``, ``..`` or
    anything else that could leave a storage root when used as a path component.
    """
    if not isinstance(item_id, str):
        raise InvalidSceneIdError(f"scene id {item_id!r} is not a string")
    if match := PSSCENE_ID.match(item_id):
        date = dt.datetime.strptime(match["date"], "%Y%m%d").date()
        return SceneId(item_id, "PSScene", date, match["satellite"])
    if match := PSORTHOTILE_ID.match(item_id):
        date = dt.date.fromisoformat(match["date"])
        return SceneId(item_id, "PSOrthoTile", date, match["satellite"])
    raise InvalidSceneIdError(
        f"scene id {item_id!r} is not a Planet PSScene (YYYYMMDD_HHMMSS[_CC]_SSSS) "
        "or PSOrthoTile (STRIP_GRIDCELL_YYYY-MM-DD_SSSS) item id"
    )


def scene_year(item_id: str) -> int:
    """The scene -> year rule: the calendar year of acquisition, read from the id."""
    return parse_scene_id(item_id).year
