"""The ``dino-parts`` segmenter: training-free part co-segmentation of a set of images.

An adaptation of the part co-segmentation of Amir, Gandelsman, Bagon and Dekel, "Deep ViT Features as
Dense Visual Descriptors" (ECCVW 2022; ``ShirAmir/dino-vit-features``,
``part_cosegmentation.py``). The images of one :meth:`DinoPartsSegmenter.segment` call are segmented
*together*: patch descriptors of all images are clustered twice, first to separate the objects the
images share from their backgrounds, then to split those objects into parts, so a part id means the
same part in every image of the call.

It works with any :class:`~xaikit.backbones.ViTBackbone` and needs none of the reference's
DINO-v1 specifics: the saliency comes from the descriptors themselves (contrast with the image
border, or similarity to the CLS token) instead of DINO-v1's CLS attention heads, the number of
stage-1 clusters is fixed instead of chosen by the elbow method, and labels are the patch clusters
upsampled to pixels instead of refined by a DenseCRF. See ``docs/segmenters.md``.

Shapes: ``B`` images, ``h x w`` patch grid, ``n = h * w`` patches per image, ``D`` feature dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

import xaikit
from xaikit.backbones import ViTBackbone
from xaikit.cluster import kmeans
from xaikit.errors import XaikitError
from xaikit.features.extract import extract_features
from xaikit.interfaces import Backbone, Segmenter
from xaikit.types import PartMap, Sample

__all__ = ["BORDER_FRACTION", "SALIENCIES", "DinoPartsSegmenter", "background_contrast", "cls_similarity", "foreground_clusters"]

SALIENCIES = ("background", "cls")
"""The saliency cues :class:`DinoPartsSegmenter` knows (see :func:`background_contrast`, :func:`cls_similarity`)."""

BORDER_FRACTION = 0.1
"""Share of an image's border patches :func:`background_contrast` compares each patch with."""


class DinoPartsSegmenter(Segmenter):
    """Anonymous, jointly consistent parts of a set of images from clustered ViT patch features.

    Label ``i`` (``1..num_parts``) is ``"part i"``; ids are consistent across the images of one
    :meth:`segment` call and ordered by part size (label 1 is the part with most patches in the
    call), but mean nothing from one call to the next (``joint = True``).

    Args:
        backbone: a registered backbone name, built with ``xaikit.create("backbone", name,
            device=device)``, or a :class:`~xaikit.backbones.ViTBackbone` used as it is.
        num_parts: parts per call (stage-2 clusters); fewer when fewer foreground patches exist.
        num_clusters: stage-1 clusters over all patches of all images; fewer when there are fewer
            patches.
        saliency: ``"background"`` (contrast with the image border, the default) or ``"cls"``
            (cosine similarity to the image's CLS token).
        saliency_threshold: a cluster is salient in an image when its patches' mean saliency there
            exceeds this, in ``[0, 1]``.
        votes: fraction of the images in which a cluster occurs where it must be salient to be
            foreground, in ``(0, 1]``.
        saliency_weight: weight of the saliency appended to each descriptor for stage-1 clustering
            (``0``: descriptors only, as the reference).
        seed: seed of both k-means runs.
        device: device of a backbone built from a name; a backbone object keeps its own.
        batch_size: images per forward pass.
        cache: keep patch features in the xaikit feature cache.

    Raises:
        XaikitError: for an option out of range or a backbone that is not a ViT backbone.
    """

    joint = True

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        num_parts: int = 4,
        num_clusters: int = 8,
        saliency: str = "background",
        saliency_threshold: float = 0.4,
        votes: float = 0.75,
        saliency_weight: float = 2.0,
        seed: int = 0,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
    ) -> None:
        _check_count("num_parts", num_parts)
        _check_count("num_clusters", num_clusters)
        _check_count("batch_size", batch_size)
        if saliency not in SALIENCIES:
            raise XaikitError(f"unknown saliency '{saliency}' for dino-parts; use one of {', '.join(SALIENCIES)}")
        _check_range("saliency_threshold", saliency_threshold, 0.0, 1.0, low_open=False)
        _check_range("votes", votes, 0.0, 1.0, low_open=True)
        _check_range("saliency_weight", saliency_weight, 0.0, float("inf"), low_open=False)
        built = xaikit.create("backbone", backbone, device=device) if isinstance(backbone, str) else backbone
        if not isinstance(built, ViTBackbone):
            raise XaikitError(
                f"dino-parts needs a ViT backbone (an xaikit.backbones.ViTBackbone), got {type(built).__name__}"
            )
        self.backbone = built
        self.num_parts = int(num_parts)
        self.num_clusters = int(num_clusters)
        self.saliency = saliency
        self.saliency_threshold = float(saliency_threshold)
        self.votes = float(votes)
        self.saliency_weight = float(saliency_weight)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.cache = bool(cache)
        self.vocabulary = tuple(f"part {index}" for index in range(1, self.num_parts + 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backbone={getattr(self.backbone, 'name', self.backbone)!r}, num_parts={self.num_parts})"

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """Co-segment ``samples`` into at most ``num_parts`` parts shared by all of them.

        Steps: (1) L2-normalised patch descriptors of every image; (2) a saliency per patch in
        ``[0, 1]``; (3) stage 1, k-means over all patches and a vote per cluster for foreground;
        (4) stage 2, k-means over the foreground patches into parts, ordered by size; (5) each
        image's patch labels mapped back to its pixels.

        Returns:
            One :class:`~xaikit.PartMap` per sample, ``labels`` ``(H, W)`` ``int64`` on the CPU,
            0 = background; all zeros for every image when no foreground is found.
        """
        if not samples:
            return []
        descriptors, cls = self.descriptors(samples)
        saliency = self.saliency_map(descriptors, cls)
        foreground = self.foreground(descriptors, saliency)
        grids = self.parts(descriptors, foreground).cpu()
        names = {index: name for index, name in enumerate(self.vocabulary, start=1)}
        preprocessing = self.backbone.preprocessing
        return [
            PartMap(labels=preprocessing.labels_to_image(grid, sample.size), names=names)
            for grid, sample in zip(grids, samples)
        ]

    def descriptors(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised patch descriptors ``(B, h, w, D)`` and CLS tokens ``(B, D)`` on the backbone's device."""
        features = extract_features(self.backbone, samples, batch_size=self.batch_size, cache=self.cache)
        device = self.backbone.device
        return F.normalize(features.patches.to(device), dim=-1), F.normalize(features.cls.to(device), dim=-1)

    def saliency_map(self, descriptors: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Per-patch saliency ``(B, h, w)`` in ``[0, 1]``: the chosen cue, smoothed, min-max per image.

        The reference averages DINO-v1's last-layer CLS attention over four chosen heads, which
        exists for no other model. Both cues here need only the features: :func:`background_contrast`
        (the default) and :func:`cls_similarity`. On demo-vit and synthetic birds, the area under
        the ROC curve of patch saliency against the true bird patches is 0.87 (full frames) and
        0.89 (crops to the box) for background contrast, but below 0.5 for CLS similarity: a
        supervised classifier never trains its patch tokens to resemble its CLS token. The cue is
        smoothed with a 3 x 3 mean filter on the patch grid (a cheap stand-in for the reference's
        DenseCRF spatial prior) and rescaled so each image spans ``[0, 1]``, as the reference
        rescales attention.
        """
        raw = background_contrast(descriptors) if self.saliency == "background" else cls_similarity(descriptors, cls)
        smoothed = F.avg_pool2d(raw[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        low = smoothed.amin(dim=(1, 2), keepdim=True)
        high = smoothed.amax(dim=(1, 2), keepdim=True)
        return (smoothed - low) / (high - low).clamp(min=1e-8)

    def foreground(self, descriptors: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        """Stage 1: foreground patches ``(B, h, w)`` bool of the whole set.

        k-means with ``num_clusters`` clusters over every patch of every image, then the vote of
        :func:`foreground_clusters`. The reference clusters the descriptors alone, which suits
        DINO, whose patch features group by object part. The final tokens of a supervised ViT such
        as demo-vit group by image and background colour instead (on full-frame synthetic birds no
        stage-1 cluster is even 20% bird, and the vote finds almost no foreground), so each point is the
        descriptor with the patch's saliency appended, times ``saliency_weight``: clusters then
        follow saliency as well as appearance, and the vote can pick out the salient ones.
        """
        batch, height, width, dim = descriptors.shape
        points = torch.cat([descriptors.reshape(-1, dim), self.saliency_weight * saliency.reshape(-1, 1)], dim=1)
        clusters = kmeans(points, min(self.num_clusters, points.shape[0]), seed=self.seed)
        assignment = clusters.assignment.view(batch, height * width)
        chosen = foreground_clusters(
            assignment, saliency.view(batch, -1), clusters.centroids.shape[0], self.saliency_threshold, self.votes
        )
        return chosen[assignment].view(batch, height, width)

    def parts(self, descriptors: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """Stage 2: part labels ``(B, h, w)`` ``int64``, 0 = background, parts ``1..`` by size.

        k-means over the foreground descriptors into ``num_parts`` clusters (fewer when there are
        fewer foreground patches); part 1 is the largest cluster, ties broken by cluster index.
        """
        labels = torch.zeros(foreground.shape, dtype=torch.int64, device=descriptors.device)
        points = descriptors[foreground]
        if points.shape[0] == 0:
            return labels
        clusters = kmeans(points, min(self.num_parts, points.shape[0]), seed=self.seed)
        order = torch.argsort(clusters.sizes, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(1, order.numel() + 1, device=order.device)
        labels[foreground] = rank[clusters.assignment]
        return labels


def background_contrast(descriptors: torch.Tensor, fraction: float = BORDER_FRACTION) -> torch.Tensor:
    """How unlike its image's border each patch is, ``(B, h, w)``: 1 - mean cosine to its closest border patches.

    A background prior from salient-object detection: the border of a photo is mostly background,
    so a patch that resembles no border patch is likely on the object. A patch is compared with
    the ``fraction`` of its image's border patches most similar to it (at least one), not only the
    single most similar, so an object that touches the border in a few places keeps its saliency.
    Needs nothing from the backbone but its patch descriptors.

    Args:
        descriptors: L2-normalised patch descriptors ``(B, h, w, D)``.
        fraction: share of the border patches averaged over, in ``(0, 1]``.
    """
    batch, height, width, dim = descriptors.shape
    border = torch.ones(height, width, dtype=torch.bool, device=descriptors.device)
    border[1:-1, 1:-1] = False
    flat = descriptors.reshape(batch, height * width, dim)
    similarity = torch.einsum("bnd,bmd->bnm", flat, flat[:, border.flatten()])
    closest = max(1, round(fraction * similarity.shape[2]))
    return (1 - similarity.topk(closest, dim=2).values.mean(dim=2)).view(batch, height, width)


def cls_similarity(descriptors: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each patch to its image's CLS token, ``(B, h, w)``.

    Args:
        descriptors: L2-normalised patch descriptors ``(B, h, w, D)``.
        cls: L2-normalised CLS tokens ``(B, D)``.
    """
    return torch.einsum("bhwd,bd->bhw", descriptors, cls)


def foreground_clusters(
    assignment: torch.Tensor, saliency: torch.Tensor, k: int, threshold: float, votes: float
) -> torch.Tensor:
    """The reference's vote: which of ``k`` clusters are foreground, ``(k,)`` bool.

    A cluster is salient in an image when the mean saliency of its patches there exceeds
    ``threshold``, and foreground when it is salient in at least ``votes`` of the images in which
    it has a patch.

    Args:
        assignment: cluster of every patch, ``(B, n)`` ``int64``.
        saliency: saliency of every patch, ``(B, n)`` in ``[0, 1]``.
        k: number of clusters.
        threshold: the saliency a cluster must exceed in an image.
        votes: the fraction of images that must agree.
    """
    counts = torch.zeros(assignment.shape[0], k, device=saliency.device).scatter_add_(1, assignment, torch.ones_like(saliency))
    totals = torch.zeros_like(counts).scatter_add_(1, assignment, saliency)
    present = counts > 0
    salient = present & (totals > threshold * counts)
    occurrences = present.sum(dim=0)
    return (occurrences > 0) & (salient.sum(dim=0) >= votes * occurrences)


def _check_count(name: str, value: object) -> None:
    """Refuse anything but an integer >= 1 (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise XaikitError(f"dino-parts option {name} must be an integer of at least 1, got {value!r}")


def _check_range(name: str, value: object, low: float, high: float, *, low_open: bool) -> None:
    """Refuse anything but a number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not (low < number if low_open else low <= number) or number > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise XaikitError(f"dino-parts option {name} must be a number in {interval}, got {value!r}")
