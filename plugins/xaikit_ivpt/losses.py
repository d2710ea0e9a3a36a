"""IVPT's training losses: PDiscoFormer's part-shaping terms plus IVPT's own.

IVPT (Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical
Concepts", 2025) trains concept-prototype maps on a frozen ViT with the part-discovery losses of
PDiscoFormer (Aniraj, A. et al., "PDiscoFormer: Relaxing Part Discovery Constraints with Vision
Transformers", ECCV 2024) -- presence, enforced background presence, equivariance, entropy, total
variation and orthogonality -- and adds a consistency term between its final and fused
cross-layer concept maps.

"Maps" are always probability maps ``(B, n, h, w)``: a softmax over the ``n`` channels at each of
the ``h x w`` patch positions, whose last channel is the background and whose channels ``[:-1]``
are the foreground concepts. Every loss is vectorised, differentiable (with finite gradients even
for one-hot maps) and returns a 0-dim tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.validation import choice_option, flag_option, number_option
from xaikit_ivpt.geometry import Affine, inverse_transform, valid_mask

__all__ = [
    "BACKGROUND_MASKS",
    "EPS",
    "TV_NORMALISATIONS",
    "TARGETS",
    "LossOptions",
    "LossWeights",
    "background_presence_loss",
    "consistency_loss",
    "entropy_loss",
    "equivariance_loss",
    "orthogonality_loss",
    "presence_loss",
    "total_variation_loss",
]

EPS = 1e-6
"""Floor of probabilities inside logarithms and of norms in denominators."""
BACKGROUND_MASKS = ("radial", "disc")
"""Weighting of the enforced background presence: ``radial`` ``r^2 / max r^2`` (the reference code,
default), ``disc`` 1 outside the inscribed circle and 0 inside."""
TV_NORMALISATIONS = ("pixels", "elements")
"""Total variation divided by ``B * h * w`` (``pixels``, the reference code's torchmetrics ``mean``,
default) or averaged over every channel too (``elements``, ``n`` times weaker)."""
TARGETS = ("detached", "attached")
"""Whether the final maps, the consistency loss's target, pass gradients (``attached``) or not
(``detached``, the reference code, default)."""


@dataclass(frozen=True)
class LossWeights:
    """Weight of each IVPT loss term (all 1 by default, as in the reference code); 0 switches a term off.

    Attributes:
        ce: classification cross-entropy.
        consistency: :func:`consistency_loss`.
        presence: :func:`presence_loss`.
        background: :func:`background_presence_loss`.
        equivariance: :func:`equivariance_loss`.
        entropy: :func:`entropy_loss`.
        tv: :func:`total_variation_loss`.
        orthogonality: :func:`orthogonality_loss`.

    Raises:
        XaikitError: if a weight is not a finite number ``>= 0`` (a bool is not a number).
    """

    ce: float = 1.0
    consistency: float = 1.0
    presence: float = 1.0
    background: float = 1.0
    equivariance: float = 1.0
    entropy: float = 1.0
    tv: float = 1.0
    orthogonality: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = number_option(f"{field.name}_weight", getattr(self, field.name), 0.0)
            if not math.isfinite(value):
                raise XaikitError(f"option {field.name}_weight must be a finite number, got {value!r}")

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of loss terms.

        Terms whose weight is 0 are skipped, not multiplied, so a NaN in a switched-off term cannot leak.

        Args:
            terms: 0-dim loss tensors keyed by field name (``"ce"``, ``"presence"``, ...).

        Returns:
            0-dim tensor; zero when no term has a positive weight.

        Raises:
            XaikitError: if a key is not a field name.
        """
        names = {field.name for field in fields(self)}
        unknown = sorted(set(terms) - names)
        if unknown:
            raise XaikitError(f"unknown loss terms {unknown}; use some of {', '.join(sorted(names))}")
        weighted = [getattr(self, name) * term for name, term in terms.items() if getattr(self, name) != 0]
        if not weighted:
            device = next(iter(terms.values())).device if terms else None
            return torch.zeros((), device=device)
        return sum(weighted[1:], weighted[0])


@dataclass(frozen=True)
class LossOptions:
    """How the loss terms are computed where the reference code and a plain reading of the papers differ.

    The defaults are the reference code's (ThomasWangY/IVPT ``engine/``), which produced the paper's numbers.

    Attributes:
        consistency_target: one of :data:`TARGETS`: ``detached`` stops the consistency loss's
            gradient at the final maps, so only the fused maps move towards them.
        tv_normalisation: one of :data:`TV_NORMALISATIONS`, see :func:`total_variation_loss`.
        background_mask: one of :data:`BACKGROUND_MASKS`, see :func:`background_presence_loss`.
        equivariance_background: include the background channel in :func:`equivariance_loss`
            (the reference compares the foreground channels only).
        equivariance_mask: multiply both maps by the round-trip validity mask in
            :func:`equivariance_loss` (the reference uses none).

    Raises:
        XaikitError: an unknown choice or a non-boolean flag, in one sentence.
    """

    consistency_target: str = "detached"
    tv_normalisation: str = "pixels"
    background_mask: str = "radial"
    equivariance_background: bool = False
    equivariance_mask: bool = False

    def __post_init__(self) -> None:
        choice_option("consistency_target", self.consistency_target, TARGETS)
        choice_option("tv_normalisation", self.tv_normalisation, TV_NORMALISATIONS)
        choice_option("background_mask", self.background_mask, BACKGROUND_MASKS)
        flag_option("equivariance_background", self.equivariance_background)
        flag_option("equivariance_mask", self.equivariance_mask)


def _check_maps(maps: torch.Tensor, name: str = "maps", *, min_size: int = 1) -> None:
    """Raise unless ``maps`` is ``(B, n, h, w)`` with ``n >= 2`` and ``h, w >= min_size``."""
    if maps.dim() != 4 or maps.shape[1] < 2:
        raise XaikitError(
            f"{name} must be (batch, channels, height, width) with at least 2 channels, got shape {tuple(maps.shape)}"
        )
    if min(maps.shape[-2:]) < min_size:
        raise XaikitError(
            f"{name} must be at least {min_size}x{min_size} positions for this loss, got shape {tuple(maps.shape)}"
        )


def presence_loss(maps: torch.Tensor) -> torch.Tensor:
    """PDiscoFormer's presence loss: every foreground part must be present somewhere in the batch.

    The foreground channels are 3x3 average pooled (stride 1, no padding); the maximum over the
    positions of each image, then over the batch, is each part's presence; the loss is one minus
    the mean presence over the parts.

    Args:
        maps: ``(B, n, h, w)`` probability maps, ``h, w >= 3``.

    Returns:
        0-dim loss in ``[0, 1]``.

    Raises:
        XaikitError: if ``maps`` has the wrong shape.
    """
    _check_maps(maps, min_size=3)
    pooled = F.avg_pool2d(maps[:, :-1], kernel_size=3, stride=1)
    presence = pooled.flatten(2).amax(dim=2).amax(dim=0)
    return 1.0 - presence.mean()


def background_presence_loss(maps: torch.Tensor, mask: str = "radial") -> torch.Tensor:
    """PDiscoFormer's enforced background presence: every image has background near its border.

    The background channel is 3x3 average pooled (stride 1, no padding) and multiplied by a mask
    over the pooled grid, whose cell centres sit at normalised coordinates evenly spaced from -1 to
    1 (0 along a side of a single cell):

    * ``radial`` (the reference code's ``EnforcedPresenceLoss``): ``(x^2 + y^2) / max(x^2 + y^2)``,
      0 at the centre and 1 in the corners;
    * ``disc``: 1 where ``x^2 + y^2 >= 1`` (outside the inscribed circle) and 0 inside.

    The maximum of each image must be 1: the loss is the binary cross-entropy of that maximum
    against 1 (``-log`` of it clamped to ``[EPS, 1]``), averaged over the batch. A pooled grid of a
    single cell (3x3 maps) has no cell away from the centre; there every cell counts.

    Args:
        maps: ``(B, n, h, w)`` probability maps, ``h, w >= 3``.
        mask: one of :data:`BACKGROUND_MASKS`.

    Returns:
        0-dim loss ``>= 0``.

    Raises:
        XaikitError: if ``maps`` has the wrong shape or ``mask`` is unknown.
    """
    _check_maps(maps, min_size=3)
    choice_option("background_mask", mask, BACKGROUND_MASKS)
    pooled = F.avg_pool2d(maps[:, -1:], kernel_size=3, stride=1)
    height, width = pooled.shape[-2:]

    def centres(count: int) -> torch.Tensor:
        return torch.linspace(-1.0, 1.0, count, device=maps.device) if count > 1 else maps.new_zeros(1)

    y, x = torch.meshgrid(centres(height), centres(width), indexing="ij")
    radius = x**2 + y**2
    weight = radius / radius.max().clamp_min(EPS) if mask == "radial" else (radius >= 1.0).to(maps.dtype)
    weight = torch.where(weight.any(), weight, torch.ones_like(weight)).to(maps.dtype)
    presence = (pooled * weight).flatten(1).amax(dim=1)
    return -torch.log(presence.clamp(EPS, 1.0)).mean()


def equivariance_loss(
    maps: torch.Tensor,
    maps_of_transformed: torch.Tensor,
    affine: Affine,
    *,
    background: bool = False,
    masked: bool = False,
) -> torch.Tensor:
    """PDiscoFormer's equivariance loss: the maps of a transformed image are the transformed maps.

    ``maps_of_transformed`` is warped back with :func:`~xaikit_ivpt.geometry.inverse_transform`,
    and the loss is one minus the mean over images and channels of the cosine similarity of the
    flattened ``h*w`` maps (an all-zero map has cosine 0). As in the reference code, by default the
    background channel (last) is left out and no validity mask is applied, so the zeros the warp
    brings in from outside the frame count against the maps.

    Args:
        maps: ``(B, n, h, w)`` maps of the original images.
        maps_of_transformed: ``(B, n, h, w)`` maps of ``geometry.transform(images, affine)``.
        affine: the transform applied to the images.
        background: compare the background channel too.
        masked: multiply both maps by :func:`~xaikit_ivpt.geometry.valid_mask` first.

    Returns:
        0-dim loss in ``[0, 2]``.

    Raises:
        XaikitError: if the shapes are wrong or differ.
    """
    _check_maps(maps)
    _check_maps(maps_of_transformed, "maps of the transformed images")
    if maps.shape != maps_of_transformed.shape:
        raise XaikitError(
            f"maps {tuple(maps.shape)} and maps of the transformed images {tuple(maps_of_transformed.shape)} "
            "must have the same shape"
        )
    channels = slice(None) if background else slice(0, -1)
    restored = inverse_transform(maps_of_transformed, affine)[:, channels]
    original = maps[:, channels]
    if masked:
        mask = valid_mask(affine, tuple(maps.shape[-2:]), device=maps.device).to(maps.dtype)
        original, restored = original * mask, restored * mask
    original, restored = original.flatten(2), restored.flatten(2)
    dot = (original * restored).sum(dim=2)
    norms = ((original**2).sum(dim=2) * (restored**2).sum(dim=2)).clamp_min(EPS**2).sqrt()
    return 1.0 - (dot / norms).mean()


def entropy_loss(maps: torch.Tensor) -> torch.Tensor:
    """PDiscoFormer's entropy loss: each position should belong to one channel.

    Args:
        maps: ``(B, n, h, w)`` probability maps.

    Returns:
        0-dim mean over images and positions of ``-sum_c p log p`` (``p`` floored at ``EPS`` inside the log).

    Raises:
        XaikitError: if ``maps`` has the wrong shape.
    """
    _check_maps(maps)
    return -(maps * torch.log(maps.clamp_min(EPS))).sum(dim=1).mean()


def total_variation_loss(maps: torch.Tensor, normalisation: str = "pixels") -> torch.Tensor:
    """PDiscoFormer's total-variation loss: maps should be piecewise constant.

    The absolute differences between vertically and between horizontally adjacent cells are summed
    over every image, channel and position, then divided by ``B * h * w`` (``pixels``: the reference
    code's torchmetrics-style ``reduction="mean"``) or by the number of differences of each
    direction (``elements``: a mean that also averages over the ``n`` channels).

    Args:
        maps: ``(B, n, h, w)`` probability maps, ``h, w >= 2``.
        normalisation: one of :data:`TV_NORMALISATIONS`.

    Returns:
        0-dim loss ``>= 0``.

    Raises:
        XaikitError: if ``maps`` has the wrong shape or ``normalisation`` is unknown.
    """
    _check_maps(maps, min_size=2)
    choice_option("tv_normalisation", normalisation, TV_NORMALISATIONS)
    vertical = (maps[..., 1:, :] - maps[..., :-1, :]).abs()
    horizontal = (maps[..., :, 1:] - maps[..., :, :-1]).abs()
    if normalisation == "elements":
        return vertical.mean() + horizontal.mean()
    batch, _, height, width = maps.shape
    return (vertical.sum() + horizontal.sum()) / (batch * height * width)


def orthogonality_loss(features: torch.Tensor) -> torch.Tensor:
    """PDiscoFormer's orthogonality loss: the features of different parts should differ.

    Args:
        features: ``(B, D, n)`` part features.

    Returns:
        0-dim ``mean((G - I)^2)`` where ``G`` is the ``(B, n, n)`` Gram matrix of the parts
        L2-normalised over ``D``.

    Raises:
        XaikitError: if ``features`` is not 3-D.
    """
    if features.dim() != 3:
        raise XaikitError(f"part features must be (batch, dimension, parts), got shape {tuple(features.shape)}")
    normalised = F.normalize(features, dim=1, eps=EPS)
    gram = normalised.transpose(1, 2) @ normalised
    identity = torch.eye(features.shape[2], device=features.device, dtype=features.dtype)
    return ((gram - identity) ** 2).mean()


def consistency_loss(final_maps: torch.Tensor, fused_maps: torch.Tensor) -> torch.Tensor:
    """IVPT's concept-region consistency: the final maps should agree with the fused cross-layer maps.

    Args:
        final_maps: ``(B, n, h, w)`` probability maps of the last layer.
        fused_maps: ``(B, n, h, w)`` fused probability maps.

    Returns:
        0-dim mean over images and positions of ``KL(final || fused) = sum_c final * (log final -
        log fused)``, both floored at ``EPS`` inside the logs.

    Raises:
        XaikitError: if the shapes are wrong or differ.
    """
    _check_maps(final_maps, "final maps")
    _check_maps(fused_maps, "fused maps")
    if final_maps.shape != fused_maps.shape:
        raise XaikitError(
            f"final maps {tuple(final_maps.shape)} and fused maps {tuple(fused_maps.shape)} must have the same shape"
        )
    log_ratio = torch.log(final_maps.clamp_min(EPS)) - torch.log(fused_maps.clamp_min(EPS))
    return (final_maps * log_ratio).sum(dim=1).mean()
