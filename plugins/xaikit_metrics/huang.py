"""Consistency and stability of part concepts (Huang et al., ICCV 2023), vectorised over units and images.

Huang, Q. et al., "Evaluation and Improvement of Interpretability for Self-Explainable Part-Prototype
Networks", ICCV 2023. Reference code: hqhQAQ/EvalProtoPNet (``util/eval_interpretability.py``,
``util/local_parts.py``, ``util/crop_cub_data.py``). The reference pipeline, step by step, and where
each step lives here:

1. Crop every test image to its bounding box (corners truncated to int) and resize the crop straight
   to the model's input size without keeping the aspect ratio (``Resize((S, S))``: 224 for
   ProtoPNet, 518 for IVPT); xaikit uses the explainer's own input size (:func:`explainer_frame`,
   :func:`prepare_batch`).
2. Truncate keypoints with ``int(float(x))``, keep ``visible == 1`` and map them into the crop frame
   as ``int(grid * ((x - x1) / (x2 - x1)))``, unclipped (:func:`keypoints_to_grid`).
3. For class-specific prototypes, keep the ground-truth class's prototypes of each image
   (the reference's ``torch.gather``; :func:`class_prototypes`).
4. Upsample every activation map bicubically to ``grid x grid``; its peak is the first maximum in
   row-major order (:func:`peak_positions`).
5. Activated region: rows ``[max(0, r - half), min(grid, r + half)]`` x columns likewise, ends
   inclusive (:func:`peak_boxes`); a visible part whose keypoint lies inside is hit
   (the reference's ``in_bbox``; :func:`part_hits`).
6. Consistency (``evaluate_consistency``): per unit and part, hits over the class's images where the
   part is visible (0 -> 1); a unit is consistent when some part reaches ``mu``
   (:func:`consistency_from_hits`).
7. Stability (``evaluate_stability`` with ``perturb_img``): per unit, the fraction of the class's
   images whose part-hit vector survives clipped Gaussian noise added, i.i.d. per element, to the
   normalised model input (:func:`perturb`, :func:`stability_from_hits`).

Only the keypoints, the peaks and the boxes live on the ``grid x grid`` frame (224); the image the
explainer sees and the noise are at its own input size and in its own normalisation.

A *unit* is one (class, concept) pair scored over the images of that class: in the
``class-specific`` mode (ProtoPNet), concept ``p`` belongs to class ``p // P`` only; in the
``class-agnostic`` mode (IVPT), every concept is scored inside every class. Only classes with at least
one image in the dataset give units (the reference would count an empty class as inconsistent and
make its stability NaN). Both scores are means over units: each result carries its ``(U,)`` unit values
(:attr:`~xaikit.MetricResult.unit_values`: 100 or 0 per unit for consistency, the unit's stability in
percent), from which ``xaikit bench`` draws a bootstrap interval over units. Apart from decoding the
samples of a batch, everything works on whole tensors; nothing loops over units, images, parts or pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.device import resolve_device
from xaikit.backbones.preprocess import IMAGENET_STD, Preprocess
from xaikit.errors import XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer, Metric
from xaikit.types import MetricResult, Sample
from xaikit.validation import integer_option, number_option
from xaikit_metrics.concepts import checked_concept_maps

__all__ = [
    "MODES",
    "Consistency",
    "Frame",
    "ConsistencyScores",
    "Stability",
    "StabilityScores",
    "bicubic_weights",
    "class_prototypes",
    "consistency_from_hits",
    "explainer_frame",
    "keypoints_to_grid",
    "part_hits",
    "peak_boxes",
    "peak_positions",
    "perturb",
    "prepare_batch",
    "stability_from_hits",
]

MODES = ("class-specific", "class-agnostic")
_PEAK_CHUNK = 32  # maps upsampled at once: 32 x 224 x 224 float32 is 6.4 MB, cache-friendly
_SCREEN_TOLERANCE = 1e-5  # x max|map|: float32 upsampling errs by under 1e-6 x max|map| (3e-7 measured)


@functools.lru_cache(maxsize=16)
def bicubic_weights(size: int, grid: int) -> torch.Tensor:
    """The ``(grid, size)`` float64 matrix of 1-D bicubic resampling from ``size`` to ``grid`` samples.

    Row ``i`` holds the weights torch's ``F.interpolate(mode="bicubic", align_corners=False)`` gives
    each source sample for output sample ``i`` (Keys kernel, ``A = -0.75``, border samples repeated),
    the same kernel as the reference's ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)``. A 2-D
    upsampling of a map ``M`` ``(h, w)`` is ``bicubic_weights(h, grid) @ M @ bicubic_weights(w, grid).T``.
    """
    basis = torch.eye(size, dtype=torch.float64).view(size, 1, size, 1)
    return F.interpolate(basis, size=(grid, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous()


def peak_positions(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """Row and column of the first maximum, in row-major order, of each map upsampled to ``grid x grid``.

    Reference step 4: ``cv2.resize(..., INTER_CUBIC)`` to ``img_size`` and the first index of
    ``np.where(map == map.max())``. The upsampling is two matrix products with
    :func:`bicubic_weights`, the same kernel as ``F.interpolate(mode="bicubic", align_corners=False)``
    at a fraction of its cost on the CPU. The peak is that of the float64 upsampling, so that float32
    rounding does not choose between near-equal pixels (it would for about 1 map in 3000 of the
    speed benchmark's). A float32 pass finds it wherever one pixel stands out by more than its
    rounding error; maps with near-ties or plateaus are upsampled again in float64
    (:func:`_chunk_peaks`).

    Args:
        maps: ``(N, K, h, w)`` float activation maps.
        grid: side of the square upsampled map.

    Returns:
        ``(N, K, 2)`` ``int64`` ``(row, column)`` on the ``grid x grid`` map.
    """
    count, concepts, height, width = maps.shape
    rows = bicubic_weights(height, grid).to(maps.device)
    cols = bicubic_weights(width, grid).to(maps.device)
    flat = maps.reshape(count * concepts, height, width).double()
    peaks = [_chunk_peaks(chunk, rows, cols) for chunk in flat.split(_PEAK_CHUNK)]
    return torch.cat(peaks).view(count, concepts, 2)


def _chunk_peaks(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """First maximum of the float64 upsampling of ``(M, h, w)`` float64 maps, screened in float32: ``(M, 2)``.

    The float32 upsampling errs by about ``1e-6 x max|map|`` at most (four non-zero taps per
    output, twice), well inside ``_SCREEN_TOLERANCE``. A pixel that is the only one within ``_SCREEN_TOLERANCE x max|map|`` of the float32
    maximum is therefore the float64 maximum too; every other map is recomputed in float64. Under
    reduced-precision float32 matmuls (TF32, bfloat16) that bound fails, so all maps go to float64.
    """
    if torch.get_float32_matmul_precision() != "highest":
        return _first_maximum(rows @ (maps @ cols.T))
    coarse = rows.float() @ (maps.float() @ cols.float().T)  # (M, G, G)
    row_max = coarse.amax(dim=2)  # (M, G)
    floor = row_max.amax(dim=1, keepdim=True) - _SCREEN_TOLERANCE * maps.abs().flatten(1).amax(dim=1, keepdim=True).float()
    near_rows = row_max >= floor
    row = near_rows.int().argmax(dim=1)
    near_cols = coarse[torch.arange(len(maps), device=maps.device), row] >= floor  # (M, G)
    peaks = torch.stack([row, near_cols.int().argmax(dim=1)], dim=1)
    unsure = (near_rows.sum(dim=1) > 1) | (near_cols.sum(dim=1) > 1)
    if unsure.any():
        peaks[unsure] = _first_maximum(rows @ (maps[unsure] @ cols.T))
    return peaks


def _first_maximum(upsampled: torch.Tensor) -> torch.Tensor:
    """``(M, H, W)`` -> ``(M, 2)`` ``int64`` position of the first maximum in row-major order."""
    row_max = upsampled.amax(dim=2)  # (M, H)
    top = row_max.amax(dim=1, keepdim=True)  # (M, 1)
    row = (row_max == top).int().argmax(dim=1)  # first row that holds the maximum
    in_row = upsampled[torch.arange(upsampled.shape[0], device=upsampled.device), row]  # (M, W)
    col = (in_row == top).int().argmax(dim=1)  # first column of that row that holds it
    return torch.stack([row, col], dim=1)


def peak_boxes(maps: torch.Tensor, grid: int, half_size: int) -> torch.Tensor:
    """The activated region of each map: a ``2 * half_size`` box around its peak, clipped to the grid.

    Reference step 5 (``region_pred`` in ``get_corresponding_object_parts``): rows
    ``[max(0, r - half_size), min(grid, r + half_size)]`` and columns likewise, both ends inclusive.

    Args:
        maps: ``(N, K, h, w)`` float activation maps.
        grid: side of the square grid the maps are upsampled to (224 in the reference).
        half_size: half the box side (36 in the reference).

    Returns:
        ``(N, K, 4)`` ``int64`` ``(top, bottom, left, right)``, inclusive.
    """
    peaks = peak_positions(maps, grid)
    low = (peaks - half_size).clamp(min=0)
    high = (peaks + half_size).clamp(max=grid)
    return torch.stack([low[..., 0], high[..., 0], low[..., 1], high[..., 1]], dim=-1)


def part_hits(boxes: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Which visible parts lie inside each activated region.

    Reference step 5 (``in_bbox((y, x), region)`` over the visible part annotations).

    Args:
        boxes: ``(N, K, 4)`` ``(top, bottom, left, right)`` inclusive, from :func:`peak_boxes`.
        keypoints: ``(N, P, 2)`` ``int64`` ``(x, y)`` on the grid, from :func:`keypoints_to_grid`.
        visible: ``(N, P)`` bool.

    Returns:
        ``(N, K, P)`` bool: concept ``k`` of image ``n`` hits part ``p``.
    """
    x = keypoints[:, None, :, 0]  # (N, 1, P)
    y = keypoints[:, None, :, 1]
    top, bottom, left, right = boxes.unsqueeze(-1).unbind(dim=2)  # each (N, K, 1)
    inside = (y >= top) & (y <= bottom) & (x >= left) & (x <= right)
    return inside & visible[:, None, :].to(inside.device)


def keypoints_to_grid(keypoints: torch.Tensor, corners: torch.Tensor, grid: int) -> torch.Tensor:
    """Map keypoints from image pixels into the ``grid x grid`` frame of the resized box crop.

    Reference step 2: ``x = int(float(x))``, then ``int(grid * ((x - x1) / (x2 - x1)))`` (same for
    ``y``), in float64 as Python does, truncated toward zero and not clipped, so that a keypoint
    outside the box lands outside the grid and is never hit.

    Args:
        keypoints: ``(N, P, 2)`` float ``(x, y)`` in the original (uncropped) image.
        corners: ``(N, 4)`` integer box corners ``(x1, y1, x2, y2)``, end exclusive.
        grid: side of the square crop frame.

    Returns:
        ``(N, P, 2)`` ``int64`` ``(x, y)`` on the grid.
    """
    points = torch.trunc(keypoints.double())
    origin = corners[:, None, :2].double()
    extent = corners[:, None, 2:].double() - origin
    return torch.trunc(grid * ((points - origin) / extent)).long()


def class_prototypes(maps: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Each image's ground-truth-class prototypes, for class-specific concepts (concept ``p`` of class ``p // P``).

    Reference step 3 (``proto_indices = targets * P + arange(P)`` and ``torch.gather``).

    Args:
        maps: ``(N, K, h, w)`` with ``K >= C * per_class``.
        labels: ``(N,)`` ``int64`` class of each image.
        per_class: ``P``, prototypes per class.

    Returns:
        ``(N, P, h, w)``: slot ``j`` of image ``n`` is concept ``labels[n] * P + j``.
    """
    index = labels[:, None].to(maps.device) * per_class + torch.arange(per_class, device=maps.device)
    return maps[torch.arange(maps.shape[0], device=maps.device)[:, None], index]


def perturb(
    images: torch.Tensor,
    noise_std: float,
    noise_clip: float,
    generator: torch.Generator | None = None,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Add the stability noise to RGB images in ``[0, 1]`` so that it lands on the normalised model input.

    Reference ``perturb_img``: noise ``N(0, noise_std^2)`` i.i.d. per element, clipped to
    ``[-noise_clip, noise_clip]``, added to the model input ``(x - mean) / std``. Here the same
    noise, multiplied by the ``std`` of its channel, is added to ``x``, so that the explainer's own
    normalisation of the result is ``(x - mean) / std + noise`` (equal up to float32 rounding). The
    images must already be at the model's input size (:func:`prepare_batch` with the
    :func:`explainer_frame`), so no resize smooths or weakens the noise; the result is not clamped.

    Args:
        images: ``(B, 3, H, W)`` float, at the model's input size.
        noise_std: standard deviation in normalised units (0.2 in the reference).
        noise_clip: bound on the absolute noise in normalised units (0.25 in the reference).
        generator: CPU generator for reproducible noise; ``None`` draws from torch's global one.
        std: the per-channel standard deviation of the explainer's normalisation.

    Returns:
        ``(B, 3, H, W)`` noisy images, same dtype and device.
    """
    noise = (torch.randn(images.shape, generator=generator) * noise_std).clamp_(-noise_clip, noise_clip)
    scale = torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1)
    return images + (noise * scale).to(images.device, images.dtype)


class Frame(NamedTuple):
    """The input an explainer's concept maps read, as the consistency and stability metrics hand it over.

    Attributes:
        size: ``(H, W)``: the box crop is resized straight to it.
        std: per-channel standard deviation of the explainer's normalisation (scales the noise).
    """

    size: tuple[int, int]
    std: tuple[float, float, float]


def explainer_frame(explainer: Explainer, grid: int, metric: str = "consistency") -> Frame:
    """The input size and normalisation an explainer's model reads, from its :attr:`~xaikit.Explainer.preprocessing`.

    An explainer that declares none gets the ``grid x grid`` crop and ImageNet normalisation.

    Raises:
        XaikitError: the explainer's preprocessing crops the centre of its input (``crop_pct < 1``),
            so its concept maps would cover only part of the box crop the metric scores them on.
    """
    preprocessing = explainer.preprocessing
    if preprocessing is None:
        return Frame((grid, grid), IMAGENET_STD)
    if preprocessing.mode == "center-crop" and preprocessing.crop_pct < 1:
        raise XaikitError(
            f"metric '{metric}' needs concept maps of the whole box crop, but {type(explainer).__name__}'s backbone keeps "
            f"only the centre {preprocessing.crop_pct:g} of its input; build the backbone with crop_pct=1 or resize=squash"
        )
    return Frame(tuple(preprocessing.size), tuple(preprocessing.std))


def _per_class_sum(values: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Sum ``(N, ...)`` values over the images of each class: ``(classes, ...)`` float64."""
    totals = torch.zeros((classes, *values.shape[1:]), dtype=torch.float64, device=values.device)
    return totals.index_add_(0, labels.to(values.device), values.double())


def _class_count(labels: torch.Tensor, unit_class: torch.Tensor) -> int:
    """Number of classes the per-class sums need: one more than the largest class index in use."""
    both = torch.cat([labels.flatten().cpu(), unit_class.flatten().cpu()])
    return int(both.max()) + 1 if both.numel() else 0


class ConsistencyScores(NamedTuple):
    """What :func:`consistency_from_hits` computes.

    Attributes:
        score: ``100 x`` the share of consistent units.
        consistent: ``(U,)`` bool, per unit.
        ratios: ``(U, P)`` float64, per unit and part: hits over images where the part is visible.
    """

    score: float
    consistent: torch.Tensor
    ratios: torch.Tensor


def consistency_from_hits(
    hits: torch.Tensor,
    visible: torch.Tensor,
    labels: torch.Tensor,
    unit_class: torch.Tensor,
    unit_concept: torch.Tensor,
    mu: float = 0.8,
) -> ConsistencyScores:
    """Consistency score from part hits (reference ``evaluate_consistency``).

    For unit ``u = (c, k)`` and part ``p``: ``ratio = #{images of class c where k hits p} /
    #{images of class c where p is visible}`` (a zero denominator counts as 1); the unit is
    consistent when ``max_p ratio >= mu``; the score is ``100 x`` the mean over units.

    Args:
        hits: ``(N, K, P)`` bool from :func:`part_hits`.
        visible: ``(N, P)`` bool.
        labels: ``(N,)`` ``int64`` class of each image.
        unit_class: ``(U,)`` ``int64`` class of each unit.
        unit_concept: ``(U,)`` ``int64`` index of each unit's concept along the ``K`` axis of ``hits``.
        mu: the part threshold (``part_thresh``, 0.8 in the reference).
    """
    classes = _class_count(labels, unit_class)
    hit_counts = _per_class_sum(hits, labels, classes)  # (C, K, P)
    visible_counts = _per_class_sum(visible.to(hits.device), labels, classes).clamp(min=1)  # (C, P)
    ratios = hit_counts[unit_class, unit_concept] / visible_counts[unit_class]  # (U, P)
    consistent = (ratios >= mu).any(dim=1)
    return ConsistencyScores(100.0 * consistent.double().mean().item(), consistent, ratios)


class StabilityScores(NamedTuple):
    """What :func:`stability_from_hits` computes.

    Attributes:
        score: ``100 x`` the mean stability over units.
        stability: ``(U,)`` float64, per unit: the share of its class's images whose hits are unchanged.
    """

    score: float
    stability: torch.Tensor


def stability_from_hits(
    clean_hits: torch.Tensor,
    noisy_hits: torch.Tensor,
    labels: torch.Tensor,
    unit_class: torch.Tensor,
    unit_concept: torch.Tensor,
) -> StabilityScores:
    """Stability score from part hits on clean and perturbed input (reference ``evaluate_stability``).

    For unit ``u = (c, k)``: the fraction of class-``c`` images whose whole part-hit vector of concept
    ``k`` is identical with and without noise; the score is ``100 x`` the mean over units. A unit
    whose class has no image gets NaN, as the reference's mean of nothing does.

    Args:
        clean_hits: ``(N, K, P)`` bool from :func:`part_hits` on the clean images.
        noisy_hits: ``(N, K, P)`` bool on the perturbed images.
        labels: ``(N,)`` ``int64`` class of each image.
        unit_class: ``(U,)`` ``int64`` class of each unit.
        unit_concept: ``(U,)`` ``int64`` index of each unit's concept along the ``K`` axis.
    """
    classes = _class_count(labels, unit_class)
    unchanged = (clean_hits == noisy_hits).all(dim=2)  # (N, K)
    kept = _per_class_sum(unchanged, labels, classes)  # (C, K)
    images = _per_class_sum(torch.ones_like(labels, dtype=torch.float64), labels, classes)  # (C,)
    stability = kept[unit_class, unit_concept] / images[unit_class]
    return StabilityScores(100.0 * stability.mean().item(), stability)


def _bbox_corners(sample: Sample) -> tuple[int, int, int, int]:
    """Integer box corners ``(x1, y1, x2, y2)``, exactly those :meth:`Sample.crop_to_bbox` crops to."""
    if sample.bbox is None:
        raise XaikitError(f"consistency and stability need a bounding box for every image, and image {sample.image_id} has none")
    x, y, w, h = (float(v) for v in sample.bbox)
    return int(x), int(y), int(x + w), int(y + h)


def prepare_batch(
    samples: Sequence[Sample], grid: int, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference steps 1 and 2 for a batch of uncropped samples with bounding boxes.

    Args:
        samples: uncropped samples with ``bbox``, ``keypoints`` and ``visible``.
        grid: side of the square frame of the keypoints and peaks (224 in the reference).
        size: ``(H, W)`` the crops are resized to, the explainer's input size; default ``(grid, grid)``.

    Returns:
        images ``(B, 3, H, W)`` float32 in ``[0, 1]`` (box crop, bilinear antialiased resize
        without keeping the aspect ratio, like the reference's ``Resize((S, S))`` on PIL images);
        keypoints ``(B, P, 2)`` ``int64`` on the grid (:func:`keypoints_to_grid`); visible ``(B, P)`` bool.
    """
    corners = torch.tensor([_bbox_corners(sample) for sample in samples], dtype=torch.int64)
    keypoints = torch.from_numpy(np.stack([sample.keypoints for sample in samples]))
    visible = torch.from_numpy(np.stack([sample.visible for sample in samples])).bool()
    images = _squash(tuple(size or (grid, grid)))([sample.crop_to_bbox().image for sample in samples])
    return images, keypoints_to_grid(keypoints, corners, grid), visible


@functools.lru_cache(maxsize=4)
def _squash(size: tuple[int, int]) -> Preprocess:
    return Preprocess(size=size, mode="squash", interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass(frozen=True)
class _Layout:
    """Which explainer channels are scored and how they form units, once the concept count is known.

    Attributes:
        mode: ``"class-specific"`` or ``"class-agnostic"``, resolved from the explainer when not given.
        concepts: ``(S,)`` ``int64`` explainer channels scored.
        per_class: ``P`` in the class-specific mode, ``None`` in the class-agnostic one.
    """

    mode: str
    concepts: torch.Tensor
    per_class: int | None

    def select(self, maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, K, h, w)`` -> the maps whose hits are kept: ``(B, P, h, w)`` or ``(B, S, h, w)``."""
        if self.per_class is not None:
            return class_prototypes(maps, labels, self.per_class)
        return maps[:, self.concepts.to(maps.device)]

    def units(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Units over the ``present`` classes: ``(U,)`` class, index along the kept axis, explainer channel."""
        if self.per_class is None:
            slots = len(self.concepts)
            return present.repeat_interleave(slots), torch.arange(slots).repeat(len(present)), self.concepts.repeat(len(present))
        owner = self.concepts // self.per_class
        keep = torch.isin(owner, present)
        return owner[keep], self.concepts[keep] % self.per_class, self.concepts[keep]


@dataclass(frozen=True)
class _Scan:
    """Part hits of every image, on the clean input and on each perturbed variant."""

    labels: torch.Tensor  # (N,) int64
    visible: torch.Tensor  # (N, P) bool
    hits: torch.Tensor  # (V, N, S, P) bool; V = 1 + number of perturbed variants
    layout: _Layout
    frame: Frame


class _HuangMetric(Metric):
    """What consistency and stability share: options, the dataset scan and the units."""

    requires = frozenset({Capability.CONCEPT_MAPS})

    def __init__(
        self,
        *,
        mode: str | None,
        prototypes_per_class: int | None,
        concepts: list[int] | None,
        grid: int,
        half_size: int,
        batch_size: int,
        device: str,
        **extra: Any,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise XaikitError(f"unknown mode {mode!r} for metric '{self.name}'; use class-specific or class-agnostic")
        if prototypes_per_class is not None:
            if mode == "class-agnostic":
                raise XaikitError("option prototypes_per_class applies to the class-specific mode only")
            integer_option("prototypes_per_class", prototypes_per_class, 1)
        if concepts is not None:
            if not isinstance(concepts, list | tuple) or not concepts:
                raise XaikitError(f"option concepts must be a non-empty list of channel indices, got {concepts!r}")
            for concept in concepts:
                integer_option("concepts", concept, 0)
            if len(set(concepts)) != len(concepts):
                raise XaikitError(f"option concepts lists a channel twice: {list(concepts)}")
        self.grid = integer_option("grid", grid, 1)
        if isinstance(half_size, bool) or not isinstance(half_size, int) or not 0 <= 2 * half_size < grid:
            raise XaikitError(
                f"half_size {half_size!r} does not fit the {grid}-pixel grid (it needs 0 <= 2 * half_size < grid); "
                f"the reference evaluation uses 36 on a 224 grid, and IVPT's parser default of 84 would inflate scores"
            )
        self.mode = mode
        self.prototypes_per_class = prototypes_per_class
        self.concepts = None if concepts is None else list(concepts)
        self.half_size = half_size
        self.batch_size = integer_option("batch_size", batch_size, 1)
        self.device = device
        self.options = {
            "mode": mode,
            "prototypes_per_class": prototypes_per_class,
            "concepts": self.concepts,
            "grid": grid,
            "half_size": half_size,
            **extra,
            "batch_size": batch_size,
            "device": device,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.options.items())})"

    def check(self, explainer: Explainer) -> None:
        """Refuse an explainer without concept maps, or whose concept mode the options do not fit."""
        super().check(explainer)
        self._mode(explainer)

    def _mode(self, explainer: Explainer) -> str:
        """The ``mode`` option, or else the explainer's :attr:`~xaikit.Explainer.concept_mode`."""
        mode = self.mode or explainer.concept_mode
        if mode not in MODES:
            raise XaikitError(f"explainer {type(explainer).__name__} declares the unknown concept_mode {mode!r}; use class-specific or class-agnostic")
        if self.prototypes_per_class is not None and mode != "class-specific":
            raise XaikitError(
                f"option prototypes_per_class applies to the class-specific mode only, and {type(explainer).__name__}'s "
                "concepts are class-agnostic; pass mode=class-specific to score them per class"
            )
        return mode

    def _layout(self, mode: str, channels: int, classes: int) -> _Layout:
        """Resolve the scored channels and ``P`` from the explainer's ``channels`` and the dataset's ``classes``."""
        if mode == "class-agnostic":
            scored = channels
            per_class = None
        else:
            per_class = self.prototypes_per_class
            if per_class is None:
                if channels % classes:
                    raise XaikitError(
                        f"class-specific mode needs a concept count that is a multiple of the {classes} classes, "
                        f"but the explainer gives {channels}; set prototypes_per_class and concepts, or use mode=class-agnostic"
                    )
                per_class = channels // classes
            elif classes * per_class > channels:
                raise XaikitError(
                    f"class-specific mode with {per_class} prototypes per class needs {classes * per_class} concepts, "
                    f"but the explainer gives {channels}"
                )
            scored = classes * per_class
        concepts = list(range(scored)) if self.concepts is None else self.concepts
        if max(concepts) >= scored:
            raise XaikitError(f"option concepts names channel {max(concepts)}, but only channels 0 to {scored - 1} can be scored")
        return _Layout(mode, torch.tensor(concepts, dtype=torch.int64), per_class)

    def _scan(self, explainer: Explainer, dataset: Dataset, variants: Callable[[torch.Tensor, Frame], list[torch.Tensor]]) -> _Scan:
        """Part hits of every image of ``dataset`` for each input ``variants(images, frame)`` gives, batch by batch.

        The images are the box crops at the explainer's input size (:func:`explainer_frame`).
        """
        labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
        classes = len(dataset.classes)
        if len(labels) == 0:
            raise XaikitError(f"metric '{self.name}' got an empty dataset")
        if labels.min() < 0 or labels.max() >= classes:
            raise XaikitError(f"metric '{self.name}' needs every image labelled with one of the {classes} classes")
        device = resolve_device(self.device)
        mode = self._mode(explainer)
        frame = explainer_frame(explainer, self.grid, self.name)
        layout: _Layout | None = None
        hits, visible = [], []
        for start in range(0, len(labels), self.batch_size):
            samples = [dataset[index] for index in range(start, min(start + self.batch_size, len(labels)))]
            images, keypoints, batch_visible = (tensor.to(device) for tensor in prepare_batch(samples, self.grid, frame.size))
            batch_labels = labels[start : start + len(samples)].to(device)
            per_variant = []
            for inputs in variants(images, frame):
                maps = checked_concept_maps(explainer, inputs).to(device)
                if layout is None:
                    layout = self._layout(mode, maps.shape[1], classes)
                boxes = peak_boxes(layout.select(maps, batch_labels), self.grid, self.half_size)
                per_variant.append(part_hits(boxes, keypoints, batch_visible).cpu())
            hits.append(torch.stack(per_variant))
            visible.append(batch_visible.cpu())
        assert layout is not None
        return _Scan(labels, torch.cat(visible), torch.cat(hits, dim=1), layout, frame)

    def _details(
        self, scan: _Scan, unit_class: torch.Tensor, unit_concept: torch.Tensor, dataset: Dataset, per_unit: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The JSON details both metrics share, with one ``per_unit`` entry per unit extended by ``per_unit``."""
        return {
            "mode": scan.layout.mode,
            "units": len(unit_class),
            "images": len(scan.labels),
            "classes": int(unit_class.unique().numel()),
            "prototypes_per_class": scan.layout.per_class,
            "concepts_scored": len(scan.layout.concepts),
            "input_size": list(scan.frame.size),
            "options": self.options,
            "per_unit": [
                {"class": c, "class_name": str(dataset.classes[c]), "concept": k, **extra}
                for c, k, extra in zip(unit_class.tolist(), unit_concept.tolist(), per_unit, strict=True)
            ],
        }


class Consistency(_HuangMetric):
    """Consistency score of Huang et al. (ICCV 2023): share of concepts that keep hitting the same part.

    Each test image is cropped to its box and resized straight to the explainer's input size (its
    :attr:`~xaikit.Explainer.preprocessing`); each concept map is upsampled to the ``grid x grid``
    frame and a ``2 * half_size`` box around its peak is its activated region. A
    unit (class, concept) is consistent when, for some part, the region holds that part's keypoint in
    at least ``mu`` of the class's images where the part is visible. Score: ``100 x`` the share of
    consistent units. Reference: hqhQAQ/EvalProtoPNet, ``evaluate_consistency``.

    Args:
        mode: ``"class-specific"`` (concept ``p`` belongs to class ``p // P``, scored on that class's
            images; ProtoPNet) or ``"class-agnostic"`` (every concept scored in every class; IVPT);
            ``None``: the explainer's :attr:`~xaikit.Explainer.concept_mode`.
        prototypes_per_class: ``P`` in the class-specific mode; default ``K // C``, which must divide.
        concepts: the explainer channels to score (e.g. to leave out a background channel); default all.
        grid: side of the square evaluation frame (224 in the reference).
        half_size: half the side of the activated region (36 in the reference script).
        mu: part threshold, ``part_thresh`` in the reference.
        batch_size: images decoded and explained at once.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, where the maps are scored.

    Raises:
        XaikitError: for an option out of range (including a ``half_size`` that does not fit the grid),
            a concept count that does not fit the mode, or an explainer whose backbone crops the
            centre of its input (:func:`explainer_frame`).
    """

    name = "consistency"
    higher_is_better = True

    def __init__(
        self,
        *,
        mode: str | None = None,
        prototypes_per_class: int | None = None,
        concepts: list[int] | None = None,
        grid: int = 224,
        half_size: int = 36,
        mu: float = 0.8,
        batch_size: int = 32,
        device: str = "auto",
    ) -> None:
        self.mu = number_option("mu", mu, 0.0, 1.0)
        super().__init__(
            mode=mode, prototypes_per_class=prototypes_per_class, concepts=concepts, grid=grid, half_size=half_size,
            batch_size=batch_size, device=device, mu=mu,
        )

    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """Consistency of ``explainer``'s concepts on ``dataset`` (uncropped samples with boxes and keypoints)."""
        scan = self._scan(explainer, dataset, lambda images, frame: [images])
        unit_class, unit_slot, unit_concept = scan.layout.units(scan.labels.unique())
        scores = consistency_from_hits(scan.hits[0], scan.visible, scan.labels, unit_class, unit_slot, self.mu)
        best_ratio, best_part = scores.ratios.max(dim=1)
        per_unit = [
            {"consistent": consistent, "part": str(dataset.part_names[part]), "ratio": ratio}
            for consistent, part, ratio in zip(scores.consistent.tolist(), best_part.tolist(), best_ratio.tolist(), strict=True)
        ]
        details = self._details(scan, unit_class, unit_concept, dataset, per_unit)
        units = tuple((100.0 * scores.consistent.double()).tolist())  # (U,) 100 per consistent unit
        return MetricResult(self.name, scores.score, self.higher_is_better, details, unit_values=units)


class Stability(_HuangMetric):
    """Stability score of Huang et al. (ICCV 2023): share of images whose part hits survive small noise.

    Same regions and part hits as :class:`Consistency`, computed on the clean images and on the
    images plus Gaussian noise ``N(0, noise_std^2)`` clipped to ``+-noise_clip``, i.i.d. per element
    of the explainer's normalised model input. A unit's stability is the share of its class's images whose part-hit
    vector is unchanged. Score: ``100 x`` the mean over units, averaged over ``draws`` noise draws.
    Reference: hqhQAQ/EvalProtoPNet, ``evaluate_stability`` and ``perturb_img``.

    Args:
        mode, prototypes_per_class, concepts, grid, half_size, batch_size, device: as for
            :class:`Consistency`.
        noise_std: noise standard deviation in normalised units.
        noise_clip: bound on the absolute noise in normalised units.
        draws: independent noise draws averaged (the reference makes one).
        seed: seed of the noise; ``None`` leaves it unseeded, as the reference does.

    Raises:
        XaikitError: as :class:`Consistency`, and for a negative noise or a draw count below 1.
    """

    name = "stability"
    higher_is_better = True

    def __init__(
        self,
        *,
        mode: str | None = None,
        prototypes_per_class: int | None = None,
        concepts: list[int] | None = None,
        grid: int = 224,
        half_size: int = 36,
        noise_std: float = 0.2,
        noise_clip: float = 0.25,
        draws: int = 1,
        seed: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
    ) -> None:
        self.noise_std = number_option("noise_std", noise_std, 0.0)
        self.noise_clip = number_option("noise_clip", noise_clip, 0.0)
        self.draws = integer_option("draws", draws, 1)
        self.seed = None if seed is None else integer_option("seed", seed, 0)
        super().__init__(
            mode=mode, prototypes_per_class=prototypes_per_class, concepts=concepts, grid=grid, half_size=half_size,
            batch_size=batch_size, device=device, noise_std=noise_std, noise_clip=noise_clip, draws=draws, seed=seed,
        )

    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """Stability of ``explainer``'s concepts on ``dataset`` (uncropped samples with boxes and keypoints)."""
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

        def variants(images: torch.Tensor, frame: Frame) -> list[torch.Tensor]:
            noisy = (perturb(images, self.noise_std, self.noise_clip, generator, frame.std) for _ in range(self.draws))
            return [images, *noisy]

        scan = self._scan(explainer, dataset, variants)
        unit_class, unit_slot, unit_concept = scan.layout.units(scan.labels.unique())
        draws = [stability_from_hits(scan.hits[0], noisy, scan.labels, unit_class, unit_slot) for noisy in scan.hits[1:]]
        stability = torch.stack([draw.stability for draw in draws]).mean(dim=0)
        per_unit = [{"stability": value} for value in stability.tolist()]
        details = self._details(scan, unit_class, unit_concept, dataset, per_unit)
        details["draw_scores"] = [draw.score for draw in draws]
        units = tuple((100.0 * stability).tolist())  # (U,) each unit's stability in percent
        return MetricResult(self.name, 100.0 * stability.mean().item(), self.higher_is_better, details, unit_values=units)
