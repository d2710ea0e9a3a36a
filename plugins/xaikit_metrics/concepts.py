"""How every concept-map metric asks an explainer for its maps."""

from __future__ import annotations

import torch

from xaikit.errors import XaikitError
from xaikit.interfaces import Explainer

__all__ = ["checked_concept_maps"]


def checked_concept_maps(explainer: Explainer, images: torch.Tensor) -> torch.Tensor:
    """``explainer.concept_maps(images)`` without gradients, refused unless it is ``(B, K, h, w)``.

    Args:
        explainer: an explainer with :attr:`~xaikit.Capability.CONCEPT_MAPS`.
        images: ``(B, 3, H, W)`` float RGB.

    Raises:
        XaikitError: the maps are not one ``(K, h, w)`` stack per image.
    """
    with torch.no_grad():
        maps = explainer.concept_maps(images)
    if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
        raise XaikitError(
            f"explainer {type(explainer).__name__} returned concept maps of shape {tuple(maps.shape)} "
            f"for {images.shape[0]} images; expected (B, K, h, w)"
        )
    return maps
