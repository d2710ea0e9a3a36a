"""Random similarity transforms for IVPT's equivariance loss.

IVPT (Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical
Concepts", 2025) shapes its concept maps with the part-discovery losses of PDiscoFormer (Aniraj, A. et
al., "PDiscoFormer: Relaxing Part Discovery Constraints with Vision Transformers", ECCV 2024), one of
which asks the maps of a rotated, scaled and shifted image to be the same transform of the original
maps. This module draws such transforms and applies them (or their inverse) with
:func:`torch.nn.functional.affine_grid` and :func:`torch.nn.functional.grid_sample`.

Conventions: ``x`` points right and ``y`` points down, as on screen; a positive angle rotates content
counter-clockwise as seen on screen, which for a square image is ``torch.rot90(x, 1, dims=(-2, -1))``
at 90 degrees. Every transform is built in pixel units about the image centre and then converted to
the normalised coordinates of ``affine_grid(align_corners=False)``, so a rotation of a non-square
image stays a rotation and a transform means the same at any resolution of the same aspect ratio
(translations are fractions of the size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.validation import choice_option, number_option

__all__ = ["MODES", "Affine", "inverse_transform", "random_affine", "transform", "valid_mask"]

MODES = ("bilinear", "nearest")
"""Interpolation modes accepted by :func:`transform` and :func:`inverse_transform`."""


@dataclass(frozen=True)
class Affine:
    """A similarity transform about the image centre.

    Rotate by ``angle`` degrees (counter-clockwise as seen on screen), scale by ``scale``, then
    translate by ``translate = (tx, ty)`` as fractions of the width / height (positive = right / down).

    Attributes:
        angle: rotation in degrees, counter-clockwise on screen.
        translate: ``(tx, ty)`` shift as fractions of the width and the height.
        scale: magnification factor, ``> 0``.

    Raises:
        XaikitError: if a value is not finite, ``translate`` is not a pair or ``scale`` is not positive.
    """

    angle: float
    translate: tuple[float, float]
    scale: float

    def __post_init__(self) -> None:
        pair = isinstance(self.translate, tuple | list) and len(self.translate) == 2
        values = (self.angle, *self.translate, self.scale) if pair else ()
        if len(values) != 4 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise XaikitError(
                "an affine transform needs a finite angle, a pair of finite translations and a finite scale, "
                f"got {self!r}"
            )
        if self.scale <= 0:
            raise XaikitError(f"the scale of an affine transform must be positive, got {self.scale!r}")

    def theta(self, size: tuple[int, int], *, inverse: bool = False) -> torch.Tensor:
        """The sampling matrix that applies this transform (or its inverse) through ``affine_grid``.

        ``affine_grid`` maps output coordinates to the input coordinates to sample, so the matrix of
        the forward transform is the inverse of the forward point map (and vice versa).

        Args:
            size: ``(height, width)`` of the image to warp.
            inverse: return the matrix that undoes the transform instead.

        Returns:
            ``(2, 3)`` float32 tensor on the CPU, for ``F.affine_grid(..., align_corners=False)``.
        """
        height, width = size
        radians = math.radians(self.angle)
        cos, sin = math.cos(radians), math.sin(radians)
        # Forward point map in pixel units about the centre (y down): counter-clockwise on screen
        # sends the right-pointing (1, 0) to the up-pointing (0, -1).
        forward = torch.tensor(
            [
                [self.scale * cos, self.scale * sin, self.translate[0] * width],
                [-self.scale * sin, self.scale * cos, self.translate[1] * height],
                [0.0, 0.0, 1.0],
            ],
            dtype=torch.float64,
        )
        # Normalised coordinates (align_corners=False) times half the size give pixels about the centre.
        half = torch.diag(torch.tensor([width / 2.0, height / 2.0, 1.0], dtype=torch.float64))
        normalised = torch.linalg.inv(half) @ forward @ half
        sampling = normalised if inverse else torch.linalg.inv(normalised)
        return sampling[:2].to(torch.float32)


def random_affine(
    generator: torch.Generator,
    *,
    degrees: float = 90.0,
    translate: float = 0.11,
    scale: tuple[float, float] = (0.8, 1.4),
) -> Affine:
    """One random transform, with IVPT's / PDiscoFormer's equivariance ranges by default.

    The angle is uniform in ``[-degrees, degrees]``, each of ``tx`` and ``ty`` uniform in
    ``[-translate, translate]`` and the scale uniform in ``scale``; all four numbers come from one
    draw of ``generator``, so the same seed gives the same transform.

    Args:
        generator: CPU random generator, the only source of randomness.
        degrees: largest rotation in degrees, in ``[0, 180]``.
        translate: largest shift as a fraction of the size, in ``[0, 1]``.
        scale: ``(low, high)`` range of the scale, ``0 < low <= high``.

    Returns:
        The drawn :class:`Affine`.

    Raises:
        XaikitError: if a range is invalid.
    """
    degrees = number_option("degrees", degrees, 0.0, 180.0)
    translate = number_option("translate", translate, 0.0, 1.0)
    if len(scale) != 2:
        raise XaikitError(f"option scale must be a (low, high) pair, got {scale!r}")
    low = number_option("scale low", scale[0], 1e-6)
    high = number_option("scale high", scale[1], low)
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    return Affine(
        angle=degrees * (2.0 * u[0] - 1.0),
        translate=(translate * (2.0 * u[1] - 1.0), translate * (2.0 * u[2] - 1.0)),
        scale=low + (high - low) * u[3],
    )


def _warp(images: torch.Tensor, affine: Affine, mode: str, *, inverse: bool) -> torch.Tensor:
    """Sample ``images`` (B, C, H, W) through the matrix of ``affine`` (or its inverse); zeros outside."""
    choice_option("interpolation mode", mode, MODES)
    if images.dim() != 4 or not images.is_floating_point():
        raise XaikitError(
            "images to transform must be a floating-point (batch, channels, height, width) tensor, "
            f"got shape {tuple(images.shape)}"
        )
    batch, _, height, width = images.shape
    theta = affine.theta((height, width), inverse=inverse).to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta.expand(batch, 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def transform(images: torch.Tensor, affine: Affine, *, mode: str = "bilinear") -> torch.Tensor:
    """Apply ``affine`` to a batch of images; what comes from outside the source is zero.

    Args:
        images: ``(B, C, H, W)`` floating-point tensor.
        affine: the transform.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(B, C, H, W)`` transformed images.

    Raises:
        XaikitError: if ``images`` is not 4-D floating point or ``mode`` is unknown.
    """
    return _warp(images, affine, mode, inverse=False)


def inverse_transform(maps: torch.Tensor, affine: Affine, *, mode: str = "bilinear") -> torch.Tensor:
    """Undo ``affine`` on maps computed from transformed images.

    The maps may have another resolution than the images that were transformed (e.g. patch-grid
    maps); with the same aspect ratio the transform means the same. ``inverse_transform(transform(x,
    a), a)`` recovers ``x`` wherever :func:`valid_mask` is 1.

    Args:
        maps: ``(B, C, h, w)`` floating-point tensor.
        affine: the transform that was applied.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(B, C, h, w)`` maps in the frame of the original images.

    Raises:
        XaikitError: if ``maps`` is not 4-D floating point or ``mode`` is unknown.
    """
    return _warp(maps, affine, mode, inverse=True)


def valid_mask(affine: Affine, size: tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """Where a round trip through ``affine`` carries content of the original.

    Computed as the bilinear round trip of an all-ones image, ``inverse_transform(transform(1))``
    at ``size``: 1 where the cell, after the forward transform, lands inside the frame with all of
    its interpolation neighbours, 0 where it lands outside, and in between along the border (the
    same partial weight that the zero padding gives the round trip there).

    Args:
        affine: the transform.
        size: ``(h, w)`` of the maps.
        device: device of the result.

    Returns:
        ``(1, 1, h, w)`` float32 tensor with values in ``[0, 1]``.
    """
    ones = torch.ones(1, 1, *size, device=device)
    return inverse_transform(transform(ones, affine), affine).clamp(0.0, 1.0)
