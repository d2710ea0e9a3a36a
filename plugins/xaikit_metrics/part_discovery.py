"""Part discovery quality as PDiscoFormer measures it (and IVPT reports it): keypoint NMI/ARI and keypoint regression.

Aniraj, A. et al., "PDiscoFormer: Relaxing Part Discovery Constraints with Vision Transformers",
ECCV 2024. Reference code: ananthu-aniraj/pdiscoformer (``evaluate_parts.py``,
``engine/eval_interpretability_nmi_ari_keypoint.py``, ``data_sets/fg_bird_dataset.py``,
``utils/data_utils/dataset_utils.py``, ``utils/get_landmark_coordinates.py``). The protocol, step by
step, and where each step lives here:

1. Full uncropped images: the shorter side is resized to ``S`` (518) and the centre ``S x S`` is
   cropped; keypoints and box follow; a keypoint outside the crop is invisible
   (:func:`frame_geometry`, :func:`prepare_batch`).
2. NMI/ARI: every concept map is upsampled bilinearly to ``S x S`` and read at the pixel nearest to
   each visible keypoint; the keypoint's predicted label is the argmax over all channels
   (background included), its true label is its part index (:func:`keypoint_labels`); scikit-learn's
   ``normalized_mutual_info_score`` and ``adjusted_rand_score`` x 100 over all visible keypoints of
   all images (:func:`contingency`, :func:`normalized_mutual_info`, :func:`adjusted_rand_index`).
3. Keypoint regression: soft centroids of the foreground maps at map resolution
   (:func:`soft_centroids`), a part active when its map exceeds 0.5 somewhere, centroids and
   keypoints normalised by the box (:func:`normalise_by_box`); per keypoint, standardised centroids
   of the images where it is visible (inactive parts zeroed) are regressed linearly without
   intercept on its standardised coordinates, fit on the train split and evaluated on the test
   split; error = mean L2 distance x 100 over visible test keypoints (:func:`regression_errors`).

scikit-learn is not needed: the scores come from the contingency table and the regression is a
batched least-squares solve over all keypoints at once. Nothing loops over keypoints or pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.device import resolve_device
from xaikit.data.subset import Subset
from xaikit.errors import XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer, Metric
from xaikit.types import MetricResult, Sample
from xaikit.validation import integer_option, number_option
from xaikit_metrics.concepts import checked_concept_maps

__all__ = [
    "RESIZE_MODES",
    "Geometry",
    "KeypointErrors",
    "KeypointRegression",
    "PartNMIARI",
    "PreparedBatch",
    "adjusted_rand_index",
    "bilinear_weights",
    "contingency",
    "frame_geometry",
    "keypoint_labels",
    "normalise_by_box",
    "normalized_mutual_info",
    "prepare_batch",
    "regression_errors",
    "soft_centroids",
]

RESIZE_MODES = ("center-crop", "squash")
_EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------- geometry


class Geometry(NamedTuple):
    """Where each image lands in the ``S x S`` evaluation frame.

    Attributes:
        resized: ``(N, 2)`` ``int64`` ``(height, width)`` the image is resized to before cropping.
        scale: ``(N, 2)`` float64 ``(sx, sy)`` applied to annotations (pixels of the original image).
        offset: ``(N, 2)`` float64 ``(left, top)`` of the crop in the resized image.
    """

    resized: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor


def frame_geometry(sizes: torch.Tensor, image_size: int, resize: str) -> Geometry:
    """The resize and crop that bring images of ``sizes`` into the ``image_size`` frame.

    ``"center-crop"`` is the reference's ``Resize(S)`` + centre crop: the shorter side becomes ``S``
    and the longer ``int(S * long / short)`` (torchvision's rule); the crop starts at
    ``round((resized - S) / 2)`` with ties to even (Python's ``round``, as torchvision's
    ``center_crop``); annotations are scaled by ``S / short`` exactly (the reference's ``factor``).
    ``"squash"`` resizes straight to ``S x S`` and scales x and y separately.

    Args:
        sizes: ``(N, 2)`` ``int64`` ``(height, width)`` of the original images.
        image_size: ``S``.
        resize: ``"center-crop"`` or ``"squash"``.
    """
    sizes = sizes.to(torch.int64)
    if resize == "squash":
        resized = torch.full_like(sizes, image_size)
        scale = image_size / sizes.flip(1).double()
        return Geometry(resized, scale, torch.zeros_like(scale))
    short = sizes.amin(dim=1, keepdim=True)
    resized = torch.where(sizes == short, image_size, (image_size * sizes.double() / short.double()).long())
    offset = torch.round((resized - image_size).double() / 2).flip(1)
    scale = (image_size / short.double()).expand(-1, 2)
    return Geometry(resized, scale.contiguous(), offset)


class PreparedBatch(NamedTuple):
    """A batch of samples in the ``S x S`` evaluation frame.

    Attributes:
        images: ``(B, 3, S, S)`` float32 in ``[0, 1]`` (bilinear antialiased resize, no normalisation).
        keypoints: ``(B, P, 2)`` float64 ``(x, y)`` pixels in the frame.
        visible: ``(B, P)`` bool: annotated visible and inside the frame (``0 <= x, y <= S``).
        boxes: ``(B, 4)`` float64 ``(x, y, width, height)`` in the frame; NaN rows for samples without a box.
    """

    images: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    boxes: torch.Tensor


def prepare_batch(samples: Sequence[Sample], image_size: int, resize: str) -> PreparedBatch:
    """Reference step 1 (``FineGrainedBirdClassificationParts.__getitem__`` and ``center_crop_boxes_kps``).

    Keypoints become ``x * sx - left``, ``y * sy - top``; one outside ``[0, S]`` is made invisible.
    The box corner is shifted the same way and clipped to ``[0, S]``; its width and height are only
    scaled, as in the reference.
    """
    geometry = frame_geometry(torch.tensor([sample.size for sample in samples]), image_size, resize)
    keypoints = torch.from_numpy(np.stack([sample.keypoints for sample in samples])).double()
    keypoints = keypoints * geometry.scale[:, None] - geometry.offset[:, None]
    inside = ((keypoints >= 0) & (keypoints <= image_size)).all(dim=2)
    visible = torch.from_numpy(np.stack([sample.visible for sample in samples])).bool() & inside
    boxes = torch.tensor(np.stack([_box(sample) for sample in samples]), dtype=torch.float64)
    corner = (boxes[:, :2] * geometry.scale - geometry.offset).clamp(0, image_size)
    boxes = torch.cat([corner, boxes[:, 2:] * geometry.scale], dim=1)
    images = torch.stack([
        _resize_crop(sample.image, size, offset, image_size)
        for sample, size, offset in zip(samples, geometry.resized.tolist(), geometry.offset.long().tolist(), strict=True)
    ])
    return PreparedBatch(images, keypoints, visible, boxes)


def _box(sample: Sample) -> np.ndarray:
    return np.full(4, np.nan) if sample.bbox is None else np.asarray(sample.bbox, np.float64)


def _resize_crop(image: np.ndarray, size: list[int], offset: list[int], image_size: int) -> torch.Tensor:
    """``(H, W, 3)`` ``uint8`` -> resized to ``size`` (bilinear, antialiased) -> ``(3, S, S)`` crop at ``(left, top)``."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    if list(pixels.shape[-2:]) != size:
        pixels = F.interpolate(pixels, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    left, top = offset
    return pixels[0, :, top : top + image_size, left : left + image_size]


# ---------------------------------------------------------------------------------------- NMI / ARI


@functools.lru_cache(maxsize=16)
def bilinear_weights(size: int, out: int) -> torch.Tensor:
    """The ``(out, size)`` float64 matrix of torch's 1-D bilinear resampling (``align_corners=False``).

    A 2-D upsampling of ``M`` ``(h, w)`` is ``bilinear_weights(h, H) @ M @ bilinear_weights(w, W).T``,
    what ``F.interpolate(mode="bilinear", align_corners=False)`` computes.
    """
    basis = torch.eye(size, dtype=torch.float64).view(size, 1, size, 1)
    return F.interpolate(basis, size=(out, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T.contiguous()


def keypoint_labels(maps: torch.Tensor, keypoints: torch.Tensor, image_size: int) -> torch.Tensor:
    """Reference step 2: the argmax channel of the bilinearly upsampled maps at each keypoint's nearest pixel.

    The reference samples with ``grid_sample(mode="nearest", align_corners=False)``, i.e. pixel
    ``round(x - 0.5)`` with ties to even; here that pixel is clamped into the frame (the reference's
    zero padding would give a keypoint exactly on the far edge label 0). Only the sampled pixels of
    the upsampled maps are computed, from :func:`bilinear_weights`, in float64.

    Args:
        maps: ``(N, K, h, w)`` concept maps.
        keypoints: ``(N, P, 2)`` ``(x, y)`` pixels in the ``S x S`` frame.
        image_size: ``S``.

    Returns:
        ``(N, P)`` ``int64`` channel index; ties go to the lower channel.
    """
    _, _, height, width = maps.shape
    pixel = torch.round(keypoints.double() - 0.5).long().clamp(0, image_size - 1).to(maps.device)
    rows = bilinear_weights(height, image_size).to(maps.device)[pixel[..., 1]]  # (N, P, h)
    cols = bilinear_weights(width, image_size).to(maps.device)[pixel[..., 0]]  # (N, P, w)
    values = torch.einsum("nph,nkhw,npw->npk", rows, maps.double(), cols)
    return values.argmax(dim=2)


def contingency(labels_true: torch.Tensor, labels_pred: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Contingency table of two labelings of the same ``M`` items.

    Args:
        labels_true: ``(M,)`` non-negative integer labels.
        labels_pred: ``(M,)`` non-negative integer labels.
        shape: ``(T, Q)``, at least one more than the largest label of each; default just that.

    Returns:
        ``(T, Q)`` ``int64``: entry ``(t, q)`` counts the items labelled ``t`` and predicted ``q``.
        Rows and columns of absent labels are zero, which no score below depends on.
    """
    labels_true, labels_pred = labels_true.flatten().long().cpu(), labels_pred.flatten().long().cpu()
    if shape is None:
        shape = (int(labels_true.max()) + 1 if len(labels_true) else 0, int(labels_pred.max()) + 1 if len(labels_pred) else 0)
    cells = torch.bincount(labels_true * shape[1] + labels_pred, minlength=shape[0] * shape[1])
    return cells.view(*shape)


def _entropy(counts: torch.Tensor) -> torch.Tensor:
    """Natural-log entropy of a labeling from its ``(L,)`` cluster sizes (zeros ignored)."""
    counts = counts[counts > 0].double()
    if counts.numel() <= 1:
        return torch.zeros((), dtype=torch.float64)
    total = counts.sum()
    return -((counts / total) * (counts.log() - total.log())).sum()


def normalized_mutual_info(table: torch.Tensor) -> float:
    """NMI with arithmetic-mean normalisation, as scikit-learn's ``normalized_mutual_info_score``.

    ``MI / ((H(true) + H(pred)) / 2)``; 1 when both labelings have a single label (or no sample),
    0 when the mutual information is 0.

    Args:
        table: ``(T, Q)`` contingency table from :func:`contingency`.
    """
    table = table[table.sum(dim=1) > 0][:, table.sum(dim=0) > 0].double()
    rows, cols = table.shape
    if rows == cols and rows <= 1:
        return 1.0
    if rows == 1 or cols == 1:
        return 0.0
    total = table.sum()
    row_sums, col_sums = table.sum(dim=1), table.sum(dim=0)
    true_index, pred_index = torch.nonzero(table, as_tuple=True)
    cells = table[true_index, pred_index]
    share = cells / total
    outer = row_sums[true_index] * col_sums[pred_index]
    terms = share * (cells.log() - total.log()) + share * (2 * total.log() - outer.log())
    terms = torch.where(terms.abs() < _EPS, 0.0, terms)
    mutual = terms.sum().clamp(min=0)
    if mutual == 0:
        return 0.0
    return float(mutual / ((_entropy(row_sums) + _entropy(col_sums)) / 2))


def adjusted_rand_index(table: torch.Tensor) -> float:
    """ARI, as scikit-learn's ``adjusted_rand_score``: from pair counts, in exact integer arithmetic.

    Args:
        table: ``(T, Q)`` contingency table from :func:`contingency`.
    """
    table = table.to(torch.int64)
    samples = int(table.sum())
    squares = int((table * table).sum())
    same_true = int((table.sum(dim=1) ** 2).sum()) - squares  # ordered pairs: same true, other predicted label
    same_pred = int((table.sum(dim=0) ** 2).sum()) - squares
    both = squares - samples
    neither = samples**2 - same_true - same_pred - squares
    if same_true == 0 and same_pred == 0:
        return 1.0
    numerator = 2 * (both * neither - same_true * same_pred)
    return numerator / ((both + same_true) * (same_true + neither) + (both + same_pred) * (same_pred + neither))


# ---------------------------------------------------------------------------------------- keypoint regression


def soft_centroids(maps: torch.Tensor, image_size: int) -> torch.Tensor:
    """Reference ``landmark_coordinates``: probability-weighted mean cell of each map, in frame pixels.

    As in the reference, cell ``(i, j)`` stands at ``(j * S / w, i * S / h)``, its top-left corner;
    a map that sums to zero has a NaN centroid.

    Args:
        maps: ``(N, K, h, w)`` non-negative maps.
        image_size: ``S``.

    Returns:
        ``(N, K, 2)`` float64 ``(x, y)``.
    """
    _, _, height, width = maps.shape
    maps = maps.double()
    mass = maps.sum(dim=(2, 3))
    rows = torch.arange(height, dtype=torch.float64, device=maps.device)
    cols = torch.arange(width, dtype=torch.float64, device=maps.device)
    x = (maps.sum(dim=2) * cols).sum(dim=2) / mass * (image_size / width)
    y = (maps.sum(dim=3) * rows).sum(dim=2) / mass * (image_size / height)
    return torch.stack([x, y], dim=2)


def normalise_by_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``(N, L, 2)`` ``(x, y)`` -> ``((x - bx) / bw, (y - by) / bh)`` for boxes ``(N, 4)`` ``(bx, by, bw, bh)``."""
    boxes = boxes.to(points.device, points.dtype)
    return (points - boxes[:, None, :2]) / boxes[:, None, 2:]


class KeypointErrors(NamedTuple):
    """What :func:`regression_errors` computes.

    Attributes:
        error: ``100 x`` the mean L2 error over all visible test keypoints.
        per_part: ``(P,)`` float64 ``100 x`` mean error per keypoint; NaN where none is visible in the test data.
        test_counts: ``(P,)`` ``int64`` visible test keypoints per part.
        fit_counts: ``(P,)`` ``int64`` visible fitting keypoints per part.
    """

    error: float
    per_part: torch.Tensor
    test_counts: torch.Tensor
    fit_counts: torch.Tensor


def _standardiser(values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``StandardScaler`` fit on the selected rows, once per selection, NaN ignored.

    Args:
        values: ``(N, F)`` or ``(P, N, F)`` float64: the same values for every selection, or one set each.
        rows: ``(P, N)`` bool, one row selection per keypoint.

    Returns:
        mean and scale, each ``(P, F)``; the scale is 1 for constant features, and a feature with no
        valid row gets mean 0 and scale 1.
    """
    values = values if values.ndim == 3 else values[None]
    valid = rows[:, :, None] & ~values.isnan()  # (P, N, F)
    filled = torch.nan_to_num(values, nan=0.0).expand_as(valid)
    count = valid.sum(dim=1).double()  # (P, F)
    mean = (filled * valid).sum(dim=1) / count.clamp(min=1)
    var = (((filled - mean[:, None]) ** 2) * valid).sum(dim=1) / count.clamp(min=1)
    constant = var <= count * _EPS * var + (count * mean * _EPS) ** 2  # sklearn's _is_constant_feature
    return mean, torch.where(constant, 1.0, var.sqrt())


def regression_errors(
    fit_centroids: torch.Tensor,
    fit_active: torch.Tensor,
    fit_keypoints: torch.Tensor,
    fit_visible: torch.Tensor,
    test_centroids: torch.Tensor,
    test_active: torch.Tensor,
    test_keypoints: torch.Tensor,
    test_visible: torch.Tensor,
) -> KeypointErrors:
    """Reference step 3 (``eval_kpr``), solved for all keypoints at once.

    For keypoint ``p``: features are the ``2K`` centroid coordinates, standardised with their mean
    and (population) standard deviation over the fitting images where ``p`` is visible, then set
    to 0 for inactive parts; the target is ``p``'s coordinates, standardised likewise. A least-squares
    fit without intercept (minimum-norm, as ``LinearRegression(fit_intercept=False)``) maps features
    to targets; test predictions are un-standardised and compared with ``p``'s visible test keypoints.

    Args:
        fit_centroids: ``(N1, K, 2)`` box-normalised centroids of the fitting images.
        fit_active: ``(N1, K)`` bool, which parts are active.
        fit_keypoints: ``(N1, P, 2)`` box-normalised keypoints.
        fit_visible: ``(N1, P)`` bool.
        test_centroids, test_active, test_keypoints, test_visible: the same for the test images.
    """
    fit_features, test_features = fit_centroids.flatten(1).double().cpu(), test_centroids.flatten(1).double().cpu()
    fit_on, test_on = (active.repeat_interleave(2, dim=1).cpu() for active in (fit_active, test_active))
    rows = fit_visible.T.cpu()  # (P, N1)
    fit_targets, test_targets = fit_keypoints.double().cpu().transpose(0, 1), test_keypoints.double().cpu().transpose(0, 1)
    mean, scale = _standardiser(fit_features, rows)  # (P, 2K)
    target_mean, target_scale = _standardiser(fit_targets, rows)  # (P, 2)

    design = torch.where(rows[:, :, None] & fit_on[None], (fit_features[None] - mean[:, None]) / scale[:, None], 0.0)
    goal = torch.where(rows[:, :, None], (fit_targets - target_mean[:, None]) / target_scale[:, None], 0.0)
    weights = torch.linalg.lstsq(design, goal, rcond=_EPS, driver="gelsd").solution  # (P, 2K, 2), scipy's cutoff

    test_design = torch.where(test_on[None], (test_features[None] - mean[:, None]) / scale[:, None], 0.0)
    predicted = (test_design @ weights) * target_scale[:, None] + target_mean[:, None]  # (P, N2, 2)
    distance = torch.linalg.vector_norm(predicted - test_targets, dim=2)  # (P, N2)
    seen = test_visible.T.cpu()
    total = torch.where(seen, distance, 0.0).sum(dim=1)
    counts = seen.sum(dim=1)
    per_part = torch.where(counts > 0, 100 * total / counts.clamp(min=1), torch.nan)
    return KeypointErrors(100 * float(total.sum() / counts.sum()), per_part, counts, rows.sum(dim=1))


# ---------------------------------------------------------------------------------------- metrics


class _Scan(NamedTuple):
    """What a metric keeps of every image: its per-batch tensors concatenated, and the channel count."""

    values: dict[str, torch.Tensor]
    channels: int


class _PartDiscoveryMetric(Metric):
    """What both metrics share: the evaluation frame, the explainer's maps and the dataset scan."""

    requires = frozenset({Capability.CONCEPT_MAPS})
    needs_boxes: ClassVar[bool] = False

    def __init__(self, *, image_size: int, resize: str, background: bool, batch_size: int, device: str, **extra: Any) -> None:
        if resize not in RESIZE_MODES:
            raise XaikitError(f"unknown resize {resize!r} for metric '{self.name}'; use center-crop or squash")
        if not isinstance(background, bool):
            raise XaikitError(f"option background must be true or false, got {background!r}")
        self.image_size = integer_option("image_size", image_size, 1)
        self.resize = resize
        self.background = background
        self.batch_size = integer_option("batch_size", batch_size, 1)
        self.device = device
        self.options = {"image_size": image_size, "resize": resize, "background": background, **extra, "batch_size": batch_size, "device": device}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.options.items())})"

    def _scan(self, explainer: Explainer, dataset: Dataset, reduce: Callable[[torch.Tensor, PreparedBatch], dict[str, torch.Tensor]]) -> _Scan:
        """Run ``reduce(maps, batch)`` on every batch of ``dataset`` and concatenate what it returns, on the CPU."""
        if len(dataset) == 0:
            raise XaikitError(f"metric '{self.name}' got an empty dataset")
        device = resolve_device(self.device)
        values: dict[str, list[torch.Tensor]] = {}
        channels: int | None = None
        for start in range(0, len(dataset), self.batch_size):
            samples = [dataset[index] for index in range(start, min(start + self.batch_size, len(dataset)))]
            boxless = [sample.image_id for sample in samples if sample.bbox is None]
            if self.needs_boxes and boxless:
                raise XaikitError(f"metric '{self.name}' normalises by the bounding box, and image {boxless[0]} has none")
            batch = prepare_batch(samples, self.image_size, self.resize)
            maps = self._concept_maps(explainer, batch.images.to(device))
            if channels is not None and maps.shape[1] != channels:
                raise XaikitError(f"explainer {type(explainer).__name__} gave {channels} concept maps for one batch and {maps.shape[1]} for another")
            channels = maps.shape[1]
            for key, value in reduce(maps, batch).items():
                values.setdefault(key, []).append(value.cpu())
        assert channels is not None
        return _Scan({key: torch.cat(parts) for key, parts in values.items()}, channels)

    def _concept_maps(self, explainer: Explainer, images: torch.Tensor) -> torch.Tensor:
        maps = checked_concept_maps(explainer, images)
        if self.background and maps.shape[1] < 2:
            raise XaikitError(f"metric '{self.name}' with background=true needs a foreground and a background channel, but the explainer gives {maps.shape[1]}")
        return maps.to(images.device)

    def _visible_count(self, visible: torch.Tensor) -> int:
        count = int(visible.sum())
        if count == 0:
            raise XaikitError(f"metric '{self.name}' found no visible keypoint inside the {self.image_size}-pixel frame")
        return count


class PartNMIARI(_PartDiscoveryMetric):
    """NMI and ARI between the part each visible keypoint is and the concept channel it falls in (PDiscoFormer).

    Each image is resized (shorter side ``image_size``) and centre-cropped; the explainer's concept
    maps are upsampled bilinearly to the frame and read at every visible keypoint; the argmax over
    all channels, background included, is the keypoint's predicted label and its part index the true
    one. Value: ``100 x`` NMI (arithmetic normalisation); ``100 x`` ARI is in the details.

    Args:
        image_size: side ``S`` of the square frame (518 for IVPT and PDiscoFormer's ViTs).
        resize: ``"center-crop"`` (the reference) or ``"squash"``.
        background: whether the last channel is background (IVPT's convention); it only adds the
            number of keypoints that fall on it to the details, as the argmax always spans every channel.
        batch_size: images decoded and explained at once.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, where the maps are read.

    Raises:
        XaikitError: for a bad option, or a dataset without any visible keypoint in the frame.
    """

    name = "part-nmi-ari"
    higher_is_better = True

    def __init__(self, *, image_size: int = 518, resize: str = "center-crop", background: bool = True, batch_size: int = 16, device: str = "auto") -> None:
        super().__init__(image_size=image_size, resize=resize, background=background, batch_size=batch_size, device=device)

    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """NMI/ARI of ``explainer``'s concept maps at the keypoints of ``dataset`` (uncropped samples)."""

        def reduce(maps: torch.Tensor, batch: PreparedBatch) -> dict[str, torch.Tensor]:
            return {"labels": keypoint_labels(maps, batch.keypoints, self.image_size), "visible": batch.visible}

        scan = self._scan(explainer, dataset, reduce)
        visible = scan.values["visible"]
        count = self._visible_count(visible)
        parts = torch.arange(visible.shape[1]).expand_as(visible)
        table = contingency(parts[visible], scan.values["labels"][visible], (visible.shape[1], scan.channels))
        nmi, ari = normalized_mutual_info(table), adjusted_rand_index(table)
        per_part = [
            {"part": str(name), "keypoints": int(row.sum()), "top_channel": int(row.argmax()), "share": float(row.max() / row.sum()) if row.sum() else 0.0}
            for name, row in zip(dataset.part_names, table, strict=True)
        ]
        details = {
            "nmi": 100 * nmi,
            "ari": 100 * ari,
            "keypoints": count,
            "images": len(visible),
            "channels": scan.channels,
            "background_keypoints": int(table[:, -1].sum()) if self.background else None,
            "contingency": table.tolist(),
            "per_part": per_part,
            "options": self.options,
        }
        return MetricResult(self.name, 100 * nmi, self.higher_is_better, details)


class KeypointRegression(_PartDiscoveryMetric):
    """Keypoint regression error from soft part centroids (PDiscoFormer): lower means the parts locate keypoints better.

    Centroids of the foreground concept maps (a part counts when its map exceeds
    ``active_threshold`` somewhere) are regressed linearly onto each keypoint, fit on the
    ``fit_split`` images and evaluated on ``dataset``. Value: ``100 x`` the mean L2 error in
    box-normalised coordinates over all visible test keypoints.

    The fitting images come from ``dataset.split(fit_split)``: a :class:`~xaikit.CUBDataset` view
    gives that split of the whole dataset; for a :class:`~xaikit.data.subset.Subset` (the benchmark
    runner's evaluated images) the split is taken from the dataset it selects from. A dataset that
    cannot give the split is refused.

    Args:
        image_size, resize, batch_size, device: as for :class:`PartNMIARI`.
        background: whether the last channel is background (IVPT's convention): it is left out of
            the centroids, as in the reference.
        fit_split: the split the regression is fit on.
        fit_images: fit on this many images of that split, evenly spaced; ``None`` (the protocol) uses all.
        active_threshold: a part is active in an image when its map's maximum exceeds this.

    Raises:
        XaikitError: for a bad option, negative concept maps, samples without a box, a missing fitting
            split, or a keypoint visible in the test data but never in the fitting data.
    """

    name = "keypoint-regression"
    higher_is_better = False
    needs_boxes = True

    def __init__(
        self,
        *,
        image_size: int = 518,
        resize: str = "center-crop",
        background: bool = True,
        fit_split: str = "train",
        fit_images: int | None = None,
        active_threshold: float = 0.5,
        batch_size: int = 16,
        device: str = "auto",
    ) -> None:
        if not isinstance(fit_split, str):
            raise XaikitError(f"option fit_split must be a split name such as train, got {fit_split!r}")
        self.fit_split = fit_split
        self.fit_images = None if fit_images is None else integer_option("fit_images", fit_images, 1)
        self.active_threshold = number_option("active_threshold", active_threshold, 0.0)
        super().__init__(
            image_size=image_size, resize=resize, background=background, batch_size=batch_size, device=device,
            fit_split=fit_split, fit_images=fit_images, active_threshold=active_threshold,
        )

    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """Fit on the ``fit_split`` images, then score the keypoint predictions on ``dataset``."""
        fit_data = self._fit_dataset(dataset)
        fit, test = (self._scan(explainer, data, self._reduce).values for data in (fit_data, dataset))
        self._visible_count(test["visible"])
        unseen = (test["visible"].any(dim=0) & ~fit["visible"].any(dim=0)).nonzero().flatten().tolist()
        if unseen:
            names = ", ".join(str(dataset.part_names[p]) for p in unseen)
            raise XaikitError(f"keypoint-regression cannot predict {names}: visible in the test images but never in the {len(fit['visible'])} fitting images")
        errors = regression_errors(
            fit["centroids"], fit["active"], fit["keypoints"], fit["visible"],
            test["centroids"], test["active"], test["keypoints"], test["visible"],
        )
        per_part = [
            {"part": str(name), "error": None if np.isnan(error) else error, "keypoints": int(tested), "fit_keypoints": int(fitted)}
            for name, error, tested, fitted in zip(dataset.part_names, errors.per_part.tolist(), errors.test_counts, errors.fit_counts, strict=True)
        ]
        details = {
            "keypoints": int(errors.test_counts.sum()),
            "images": len(test["visible"]),
            "fit_images": len(fit["visible"]),
            "parts": fit["active"].shape[1],
            "active_share": test["active"].double().mean(dim=0).tolist(),
            "per_part": per_part,
            "options": self.options,
        }
        return MetricResult(self.name, errors.error, self.higher_is_better, details)

    def _reduce(self, maps: torch.Tensor, batch: PreparedBatch) -> dict[str, torch.Tensor]:
        """Box-normalised centroids ``(B, K, 2)``, active parts ``(B, K)``, keypoints ``(B, P, 2)`` and visibility of one batch."""
        foreground = maps[:, :-1] if self.background else maps
        if bool((foreground < 0).any()):
            raise XaikitError("keypoint-regression needs non-negative concept maps such as part probabilities, and the explainer gave negative values")
        return {
            "centroids": normalise_by_box(soft_centroids(foreground, self.image_size), batch.boxes),
            "active": foreground.amax(dim=(2, 3)) > self.active_threshold,
            "keypoints": normalise_by_box(batch.keypoints, batch.boxes),
            "visible": batch.visible,
        }

    def _fit_dataset(self, dataset: Dataset) -> Dataset:
        """The ``fit_split`` images of the whole dataset ``dataset`` comes from, thinned to ``fit_images`` if set."""
        source = dataset.dataset if isinstance(dataset, Subset) else dataset
        try:
            fit = source.split(self.fit_split)
        except (XaikitError, ValueError, KeyError, NotImplementedError) as error:
            raise XaikitError(
                f"keypoint-regression fits on the '{self.fit_split}' split, which {type(source).__name__} cannot give ({error}); "
                f"evaluate on a dataset whose split('{self.fit_split}') returns the fitting images, such as xaikit.CUBDataset"
            ) from None
        if self.fit_images is None or self.fit_images >= len(fit):
            return fit
        return Subset(fit, np.linspace(0, len(fit) - 1, self.fit_images).round().astype(np.int64))
