"""The 15 keypoint parts of CUB-200-2011, in the order of the official ``parts/parts.txt``.

Part ids in the official files are 1-based: part id ``k`` is ``CUB_PART_NAMES[k - 1]``. Per-pixel part
masks written by xaikit use the same ids (0 = background).
"""

from __future__ import annotations

CUB_PART_NAMES: tuple[str, ...] = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
"""Names of the 15 CUB parts; index ``k - 1`` holds part id ``k``."""
