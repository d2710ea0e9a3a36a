"""The shared bird part vocabulary and the mapping of segmenter part names onto CUB's 15 parts.

Text-prompted segmenters name their parts in their own style: VLPart's Pascal-Part classes are
``"bird:beak"``, OV-PARTS' are ``"bird's beak"``, CLIPSeg and SAN take whatever prompts they are
given (``"bird beak"`` by default here). :func:`part_key` reduces any of these to one key
(``"beak"``), and :data:`CUB_PARTS_OF` says which of CUB's 15 keypoint parts that key covers, so a
metric can check whether the segment under a CUB keypoint is the right part:
:func:`cub_parts_of_labels` turns a :class:`~xaikit.PartMap`'s ``names`` into a ``(K + 1, 15)``
boolean table, row ``k`` for label ``k`` (row 0, background, covers nothing).

One segmenter part may cover several CUB parts (``head`` covers crown, forehead, nape and both
eyes), and one CUB part may be covered by several segmenter parts (nape lies on the head and on the
neck). The table is documented in ``docs/segmenters.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import XaikitError

__all__ = [
    "BIRD_VOCABULARY",
    "CUB_PARTS_OF",
    "PASCAL_PART_BIRD",
    "cub_parts",
    "cub_parts_of_labels",
    "object_part",
    "parse_vocabulary",
    "part_key",
]

BIRD_VOCABULARY: tuple[str, ...] = (
    "bird head",
    "bird beak",
    "bird eye",
    "bird neck",
    "bird wing",
    "bird tail",
    "bird leg",
    "bird foot",
    "bird torso",
)
"""The default prompts of every text-prompted segmenter: Pascal-Part's nine bird parts, prefixed
with the object, since bare part names ("head") work poorly with VLPart and CLIPSeg alike."""

PASCAL_PART_BIRD: Mapping[int, str] = {
    8: "bird:beak",
    9: "bird:head",
    10: "bird:eye",
    11: "bird:leg",
    12: "bird:foot",
    13: "bird:wing",
    14: "bird:neck",
    15: "bird:tail",
    16: "bird:torso",
}
"""VLPart's Pascal-Part bird classes by label id (``PASCAL_PART_CATEGORIES`` id = class index + 1)."""

_CUB_SELF = {name: (name,) for name in CUB_PART_NAMES}
CUB_PARTS_OF: Mapping[str, tuple[str, ...]] = {
    **_CUB_SELF,
    "head": ("crown", "forehead", "nape", "left eye", "right eye"),
    "eye": ("left eye", "right eye"),
    "neck": ("nape", "throat"),
    "torso": ("back", "belly", "breast"),
    "wing": ("left wing", "right wing"),
    "leg": ("left leg", "right leg"),
    "foot": ("left leg", "right leg"),
}
"""Part key (see :func:`part_key`) -> the CUB parts it covers. Every CUB part name maps to itself,
so a vocabulary of CUB names ("bird breast", "bird left wing") maps one to one. CUB's leg keypoint
sits on the foot, so ``foot`` covers the legs too."""

_SYNONYMS = {
    "body": "torso",
    "bill": "beak",
    "eyes": "eye",
    "wings": "wing",
    "legs": "leg",
    "feet": "foot",
    "tail feathers": "tail",
}


def object_part(name: str) -> tuple[str, str]:
    """Split a part name into ``(object, part)``, lower case; ``object`` is ``""`` when absent.

    Understands VLPart's ``"bird:beak"`` and OV-PARTS' ``"bird's beak"``; a plain
    ``"bird beak"`` is split at its first space, and a single word is a bare part.
    """
    text = " ".join(name.lower().split())
    for separator in (":", "'s "):
        head, found, tail = text.partition(separator)
        if found:
            return head.strip(), tail.strip()
    head, _, tail = text.partition(" ")
    return (head, tail) if tail else ("", head)


def part_key(name: str, object_name: str = "bird") -> str:
    """The object-free, canonical part of ``name``: ``"bird:torso"``, ``"bird's torso"``,
    ``"bird body"`` and ``"torso"`` all give ``"torso"``.

    The object word is dropped only when it is ``object_name``; ``"left wing"`` stays whole.
    """
    obj, part = object_part(name)
    if obj and obj != object_name:
        part = f"{obj} {part}"
    return _SYNONYMS.get(part, part)


def cub_parts(name: str, object_name: str = "bird") -> tuple[str, ...]:
    """The CUB parts that a segmenter part named ``name`` covers; ``()`` when it covers none."""
    return CUB_PARTS_OF.get(part_key(name, object_name), ())


def cub_parts_of_labels(
    names: Mapping[int, str], cub_names: Sequence[str] = CUB_PART_NAMES, object_name: str = "bird"
) -> torch.Tensor:
    """Which CUB part each label of a :class:`~xaikit.PartMap` covers.

    Args:
        names: the part map's ``names`` (label id -> part name).
        cub_names: the keypoint parts, in the dataset's row order (CUB's 15 by default).
        object_name: the object word to strip from part names.

    Returns:
        ``(K + 1, P)`` ``bool`` with ``K`` the largest label id: entry ``[k, p]`` is true when
        label ``k`` covers keypoint part ``cub_names[p]``. Row 0 (background) and unnamed ids are
        all false, so ``table[labels[y, x], p]`` answers "is keypoint ``p`` at ``(x, y)`` inside
        its part?" for a whole batch of pixels at once.
    """
    column = {name: index for index, name in enumerate(cub_names)}
    table = torch.zeros(max(names, default=0) + 1, len(cub_names), dtype=torch.bool)
    for label, name in names.items():
        covered = [column[part] for part in cub_parts(name, object_name) if part in column]
        table[label, covered] = True
    return table


def parse_vocabulary(value: str | Sequence[str], segmenter: str) -> tuple[str, ...]:
    """A vocabulary option as a tuple of distinct, stripped names.

    Args:
        value: a list of part names, or one comma-separated string (``"bird head, bird beak"``).
        segmenter: the segmenter's name, for the error message.

    Raises:
        XaikitError: an empty vocabulary, or a name given twice (case-insensitively).
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(" ".join(str(item).split()) for item in items if str(item).strip())
    if not names:
        raise XaikitError(f"segmenter '{segmenter}' needs at least one part name in its vocabulary")
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise XaikitError(f"segmenter '{segmenter}' got the part name '{name}' twice in its vocabulary")
        seen.add(name.lower())
    return names
