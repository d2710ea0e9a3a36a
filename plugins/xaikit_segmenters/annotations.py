"""The ``annotations`` segmenter: ground-truth parts from a dataset's own annotations.

Two sources, chosen per sample:

* **part masks** (``Sample.part_mask``, e.g. synthetic-birds): used as they are, label ``k`` is part
  ``Sample.part_names[k - 1]``;
* **keypoints** (CUB-200-2011): every pixel inside the bounding box within ``radius`` of a visible
  keypoint gets the label of the *nearest* visible keypoint, so the regions of nearby parts (eyes,
  forehead, crown) split between them instead of overlapping.

Label ids always follow the sample's part order (``k`` = ``part_names[k - 1]``), which for CUB is
the official ``parts.txt`` order, so ids mean the same part in every image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch

from xaikit.data.parts import CUB_PART_NAMES
from xaikit.errors import DatasetError, XaikitError
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample

__all__ = ["AnnotationSegmenter", "keypoint_regions"]

SOURCES = ("auto", "masks", "keypoints")


def keypoint_regions(
    keypoints: torch.Tensor, visible: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int], radius: float
) -> torch.Tensor:
    """Label each pixel of ``box`` with its nearest visible keypoint within ``radius``.

    Args:
        keypoints: ``(P, 2)`` ``(x, y)`` in image pixels.
        visible: ``(P,)`` bool.
        size: ``(H, W)`` of the image.
        box: ``(x1, y1, x2, y2)`` integer pixels, end exclusive, already clipped to the image.
        radius: largest distance in pixels from a pixel centre to its keypoint.

    Returns:
        ``(H, W)`` ``int64``: ``k + 1`` for keypoint ``k``, 0 elsewhere (outside the box, or farther
        than ``radius`` from every visible keypoint). Distance ties go to the lower part id.
    """
    labels = torch.zeros(size, dtype=torch.int64)
    x1, y1, x2, y2 = box
    shown = torch.nonzero(visible).flatten()
    if shown.numel() == 0 or x2 <= x1 or y2 <= y1:
        return labels
    ys = torch.arange(y1, y2, dtype=torch.float32) + 0.5
    xs = torch.arange(x1, x2, dtype=torch.float32) + 0.5
    points = keypoints[shown].float()
    squared = (xs.view(1, 1, -1) - points[:, 0].view(-1, 1, 1)) ** 2 + (ys.view(1, -1, 1) - points[:, 1].view(-1, 1, 1)) ** 2
    nearest_distance, nearest = squared.min(dim=0)  # (h, w); min returns the first (lowest id) on ties
    region = torch.where(nearest_distance <= radius**2, shown[nearest] + 1, torch.zeros_like(nearest))
    labels[y1:y2, x1:x2] = region
    return labels


class AnnotationSegmenter(Segmenter):
    """Ground-truth part maps from part masks or keypoints (a weight-free reference segmenter).

    Args:
        source: ``"auto"`` (part masks where a sample has them, else keypoints), ``"masks"`` or
            ``"keypoints"``.
        radius: keypoint regions' radius as a fraction of the bounding box's geometric mean side
            ``sqrt(w * h)`` (the whole image when a sample has no box).
        part_names: the vocabulary, in label order; CUB's 15 parts by default. Samples must use
            the same part order.
    """

    needs_annotations = True

    def __init__(self, source: str = "auto", radius: float = 0.12, part_names: Sequence[str] | None = None) -> None:
        if source not in SOURCES:
            raise XaikitError(f"unknown annotation source '{source}'; use one of {', '.join(SOURCES)}")
        if not 0 < float(radius) <= 1:
            raise XaikitError(f"radius is a fraction of the bounding-box size in (0, 1], got {radius}")
        self.source = source
        self.radius = float(radius)
        self.vocabulary = tuple(part_names) if part_names is not None else CUB_PART_NAMES
        self._names = {index + 1: name for index, name in enumerate(self.vocabulary)}

    def __repr__(self) -> str:
        return f"AnnotationSegmenter(source={self.source!r}, radius={self.radius})"

    @property
    def fingerprint(self) -> str:
        """Options and vocabulary: the output depends only on them and the sample's annotations."""
        spec = {"segmenter": "annotations", "version": 1, "source": self.source, "radius": self.radius, "parts": list(self.vocabulary)}
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One ground-truth :class:`~xaikit.PartMap` per sample.

        Raises:
            DatasetError: a sample has no usable annotation for the chosen source, or parts in
                another order than the vocabulary.
        """
        return [PartMap(labels=self._labels(sample), names=self._names) for sample in samples]

    def _labels(self, sample: Sample) -> torch.Tensor:
        if sample.part_names and tuple(sample.part_names) != self.vocabulary:
            raise DatasetError(
                f"image {sample.image_id} names its parts {list(sample.part_names)}, not the segmenter's vocabulary; "
                "pass part_names to the annotations segmenter"
            )
        if sample.part_mask is not None and self.source in ("auto", "masks"):
            return torch.from_numpy(sample.part_mask.astype(np.int64))
        if self.source == "masks":
            raise DatasetError(f"image {sample.image_id} has no part mask for the annotations segmenter (source=masks)")
        if len(sample.keypoints) == 0:
            raise DatasetError(
                f"image {sample.image_id} has no part annotations; the annotations segmenter needs an annotated "
                "dataset image (choose another segmenter for unannotated images)"
            )
        height, width = sample.size
        box = (0, 0, width, height)
        if sample.bbox is not None:
            x, y, w, h = (float(v) for v in sample.bbox)
            box = (max(0, int(x)), max(0, int(y)), min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h))))
        side = float(np.sqrt(max(box[2] - box[0], 1) * max(box[3] - box[1], 1)))
        return keypoint_regions(
            torch.from_numpy(sample.keypoints), torch.from_numpy(sample.visible), (height, width), box, self.radius * side
        )
