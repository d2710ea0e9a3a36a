"""Value types that flow between xaikit components.

Raw data coming off disk (:class:`Sample`) is held as NumPy arrays, exactly as decoded; everything a
model or an algorithm computes (:class:`Features`, :class:`PartMap`, :class:`Match`,
:class:`Explanation`) is held as torch tensors so that it can stay on the device where it was made.

Conventions used in every shape below:

- ``B`` batch size, ``H x W`` image height and width in pixels, ``h x w`` a patch or concept grid,
  ``D`` feature dimension, ``P`` number of annotated keypoint parts (15 for CUB), ``C`` number of
  classes, ``K`` number of concepts.
- Image coordinates are ``(x, y)`` in pixels, x to the right, y down, with the origin at the top-left
  corner of the top-left pixel (pixel ``(i, j)`` covers ``x in [j, j+1)``, ``y in [i, i+1)``).
- Part label maps use 0 for background.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Explanation", "Features", "Match", "MetricResult", "PartMap", "Sample"]


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and everything annotated about it.

    Attributes:
        image: RGB image, ``(H, W, 3)`` ``uint8``.
        label: 0-based class index into the dataset's ``classes``; ``-1`` when unknown.
        image_id: the dataset's own id for the image (for CUB, the official id from ``images.txt``).
        keypoints: part keypoints, ``(P, 2)`` ``float32`` as ``(x, y)`` pixels; rows of invisible
            parts hold whatever the annotation says (``0, 0`` in CUB). May lie outside the image
            after :meth:`crop`.
        visible: which keypoints are annotated as visible, ``(P,)`` ``bool``.
        part_names: names of the ``P`` keypoint parts, in row order.
        bbox: object bounding box ``(x, y, width, height)`` ``float32`` in pixels, or ``None``.
        part_mask: per-pixel part ids, ``(H, W)`` ``uint8``, 0 = background and ``k`` = part
            ``part_names[k - 1]``; ``None`` when the dataset has no part masks.
        foreground: object mask, ``(H, W)`` ``bool``, or ``None``.
        path: the image file, when the sample came from disk.
        is_train: whether the sample belongs to the training split; ``None`` when unknown.
    """

    image: np.ndarray
    label: int = -1
    image_id: int = -1
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    visible: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    part_names: tuple[str, ...] = ()
    bbox: np.ndarray | None = None
    part_mask: np.ndarray | None = None
    foreground: np.ndarray | None = None
    path: Path | None = None
    is_train: bool | None = None

    def __post_init__(self) -> None:
        image = self.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Sample.image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        parts = len(self.part_names)
        if self.keypoints.shape != (parts, 2) or self.visible.shape != (parts,):
            raise ValueError(
                f"Sample has {parts} part names but keypoints {self.keypoints.shape} and "
                f"visible {self.visible.shape}"
            )
        for name in ("part_mask", "foreground"):
            mask = getattr(self, name)
            if mask is not None and mask.shape != image.shape[:2]:
                raise ValueError(f"Sample.{name} is {mask.shape}, the image is {image.shape[:2]}")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self.image.shape[0], self.image.shape[1]

    def crop(self, box: tuple[int, int, int, int]) -> Sample:
        """Return the sample cropped to ``box = (x1, y1, x2, y2)`` (integer pixels, end exclusive).

        The box is clipped to the image. Keypoints are shifted into the crop frame and keep their
        annotated visibility even when they fall outside the crop (Huang et al.'s evaluation counts
        such parts as visible and never hit); masks are cropped; the bounding box is shifted and
        clipped to the crop.
        """
        height, width = self.size
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(width, int(box[2])), min(height, int(box[3]))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"crop box {box} does not overlap the {width}x{height} image")
        offset = np.array([x1, y1], np.float32)
        bbox = None
        if self.bbox is not None:
            corners = np.concatenate([self.bbox[:2], self.bbox[:2] + self.bbox[2:]]) - np.tile(offset, 2)
            corners = np.clip(corners, 0, [x2 - x1, y2 - y1, x2 - x1, y2 - y1])
            bbox = np.concatenate([corners[:2], corners[2:] - corners[:2]]).astype(np.float32)
        return dataclasses.replace(
            self,
            image=np.ascontiguousarray(self.image[y1:y2, x1:x2]),
            keypoints=(self.keypoints - offset).astype(np.float32),
            bbox=bbox,
            part_mask=None if self.part_mask is None else np.ascontiguousarray(self.part_mask[y1:y2, x1:x2]),
            foreground=None if self.foreground is None else np.ascontiguousarray(self.foreground[y1:y2, x1:x2]),
        )

    def crop_to_bbox(self) -> Sample:
        """Crop to the bounding box as Huang et al. do: corners truncated to int, end = ``x + w``.

        Raises:
            ValueError: when the sample has no bounding box.
        """
        if self.bbox is None:
            raise ValueError(f"image {self.image_id} has no bounding box to crop to")
        x, y, w, h = (float(v) for v in self.bbox)
        return self.crop((int(x), int(y), int(x + w), int(y + h)))


@dataclass(eq=False)
class Features:
    """What a :class:`~xaikit.Backbone` computes for a batch of images.

    Attributes:
        cls: global image embedding (the CLS token after the final norm), ``(B, D)`` float.
        patches: patch tokens after the final norm on the patch grid, ``(B, h, w, D)`` float.
        layers: optional patch tokens of intermediate blocks, block index -> ``(B, h, w, D)``.
    """

    cls: torch.Tensor
    patches: torch.Tensor
    layers: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cls.ndim != 2 or self.patches.ndim != 4:
            raise ValueError(
                f"Features need cls (B, D) and patches (B, h, w, D), got {tuple(self.cls.shape)} "
                f"and {tuple(self.patches.shape)}"
            )
        if self.cls.shape[0] != self.patches.shape[0] or self.cls.shape[1] != self.patches.shape[3]:
            raise ValueError(
                f"Features.cls {tuple(self.cls.shape)} and patches {tuple(self.patches.shape)} disagree"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the patch grid."""
        return self.patches.shape[1], self.patches.shape[2]


@dataclass(eq=False)
class PartMap:
    """A labelled part segmentation of one image.

    Attributes:
        labels: part label per pixel, ``(H, W)`` ``int64``; 0 = background, ``k`` = part ``names[k]``.
        names: label id -> part name for every label the segmenter may emit (never 0).
        scores: confidence of the winning label per pixel, ``(H, W)`` float, or ``None``.
    """

    labels: torch.Tensor
    names: Mapping[int, str]
    scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.labels.ndim != 2:
            raise ValueError(f"PartMap.labels must be (H, W), got {tuple(self.labels.shape)}")
        if 0 in self.names:
            raise ValueError("PartMap.names must not name label 0, which is background")
        if self.scores is not None and self.scores.shape != self.labels.shape:
            raise ValueError(
                f"PartMap.scores {tuple(self.scores.shape)} differ from labels {tuple(self.labels.shape)}"
            )

    def present(self) -> torch.Tensor:
        """Labels that cover at least one pixel, ascending, background excluded: ``(L,)`` ``int64``."""
        found = torch.unique(self.labels)
        return found[found != 0]

    def masks(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One boolean mask per label, ``(L, H, W)``; ``labels`` defaults to :meth:`present`."""
        labels = self.present() if labels is None else labels.to(self.labels.device)
        return self.labels.unsqueeze(0) == labels.view(-1, 1, 1)

    def centroids(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel-centre centroids ``(x, y)`` of each label, ``(L, 2)`` ``float32``; NaN when absent."""
        masks = self.masks(labels).float()
        height, width = self.labels.shape
        ys = torch.arange(height, dtype=torch.float32, device=masks.device) + 0.5
        xs = torch.arange(width, dtype=torch.float32, device=masks.device) + 0.5
        area = masks.sum(dim=(1, 2))
        cx = (masks.sum(dim=1) * xs).sum(dim=1) / area
        cy = (masks.sum(dim=2) * ys).sum(dim=1) / area
        return torch.stack([cx, cy], dim=1)


@dataclass(eq=False)
class Match:
    """Pairs found by a :class:`~xaikit.Matcher` between query and candidate descriptors.

    Attributes:
        query: row indices into the query descriptors, ``(M,)`` ``int64``.
        candidate: row indices into the candidate descriptors, ``(M,)`` ``int64``.
        similarity: similarity of each pair, ``(M,)`` float.
    """

    query: torch.Tensor
    candidate: torch.Tensor
    similarity: torch.Tensor

    def __post_init__(self) -> None:
        if not (self.query.shape == self.candidate.shape == self.similarity.shape) or self.query.ndim != 1:
            raise ValueError(
                "Match.query, candidate and similarity must be equal-length vectors, got "
                f"{tuple(self.query.shape)}, {tuple(self.candidate.shape)}, {tuple(self.similarity.shape)}"
            )

    def __len__(self) -> int:
        return self.query.shape[0]


@dataclass(eq=False)
class Explanation:
    """Predictions and explanations of an :class:`~xaikit.Explainer` for a batch of images.

    Attributes:
        predictions: predicted class index per image, ``(B,)`` ``int64``.
        scores: class scores per image, ``(B, C)`` float (for KLC, vote shares; for IVPT, logits).
        concept_maps: ``(B, K, h, w)`` float activation of each of ``K`` concepts, or ``None``.
        concept_names: names of the ``K`` concepts, or ``None``.
        details: per image, explainer-specific JSON-serialisable facts (retrieved prototypes, matched
            parts and keypoints, ...); empty dicts when the explainer has none.
    """

    predictions: torch.Tensor
    scores: torch.Tensor
    concept_maps: torch.Tensor | None = None
    concept_names: Sequence[str] | None = None
    details: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        batch = self.predictions.shape[0]
        if self.predictions.ndim != 1 or self.scores.ndim != 2 or self.scores.shape[0] != batch:
            raise ValueError(
                f"Explanation needs predictions (B,) and scores (B, C), got {tuple(self.predictions.shape)} "
                f"and {tuple(self.scores.shape)}"
            )
        if self.concept_maps is not None and (self.concept_maps.ndim != 4 or self.concept_maps.shape[0] != batch):
            raise ValueError(f"Explanation.concept_maps must be (B, K, h, w), got {tuple(self.concept_maps.shape)}")
        if self.details and len(self.details) != batch:
            raise ValueError(f"Explanation.details has {len(self.details)} entries for {batch} images")
        if not self.details:
            self.details = [{} for _ in range(batch)]

    def __len__(self) -> int:
        return self.predictions.shape[0]


@dataclass(frozen=True)
class MetricResult:
    """The outcome of one :class:`~xaikit.Metric`.

    Attributes:
        name: the metric's registered name.
        value: the headline number (e.g. consistency in percent), finite; or ``None`` when it cannot
            be computed, with the reason in ``details["reason"]``.
        higher_is_better: the direction in which ``value`` improves.
        details: per-unit detail and secondary numbers, JSON-serialisable.
        unit_values: for a metric whose ``value`` is a mean over units (Huang et al.'s class-concept
            units, faithfulness' images), the ``U >= 1`` finite per-unit values whose mean is
            ``value``, on its scale (a consistent unit is 100, an inconsistent one 0); ``xaikit bench``
            records their 95 % bootstrap interval over units. ``None`` (the default) for a value that
            is no mean over units, and whenever ``value`` is ``None``.
    """

    name: str
    value: float | None
    higher_is_better: bool
    details: Mapping[str, Any] = field(default_factory=dict)
    unit_values: tuple[float, ...] | None = None
