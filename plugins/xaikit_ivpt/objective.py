"""IVPT's training objective: every loss term of one batch, from one batched forward pass.

The terms (reference code, ``../shared/reference/ivpt-and-metrics.md`` section 4), each weighted by
:class:`~xaikit_ivpt.losses.LossWeights`:

* ``ce``: cross-entropy of the logits (the mean of the part scores);
* ``consistency``: KL(final-layer maps || fused maps), averaged over the intermediate layers;
* ``presence``, ``background``, ``entropy``, ``tv``: PDiscoFormer's part-shaping losses on every
  layer's maps, averaged over layers;
* ``equivariance``: one random affine transform per batch; the transformed images go through the
  network in the same forward pass as the originals, and their maps, transformed back, should
  equal the originals' (averaged over layers);
* ``orthogonality``: of the final modulated part features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from xaikit_ivpt.geometry import Affine, transform
from xaikit_ivpt.losses import (
    LossWeights,
    background_presence_loss,
    consistency_loss,
    entropy_loss,
    equivariance_loss,
    orthogonality_loss,
    presence_loss,
    total_variation_loss,
)
from xaikit_ivpt.model import IVPTOutput

__all__ = ["loss_terms"]

_SHAPING: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "presence": presence_loss,
    "background": background_presence_loss,
    "entropy": entropy_loss,
    "tv": total_variation_loss,
}


def _mean(values: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(values)).mean()


def loss_terms(
    model: Callable[..., IVPTOutput],
    pixels: torch.Tensor,
    labels: torch.Tensor,
    weights: LossWeights,
    affine: Affine,
    grouping: str = "gumbel",
) -> dict[str, torch.Tensor]:
    """Every loss term with a non-zero weight for one batch.

    Args:
        model: the :class:`~xaikit_ivpt.model.IVPTModel` (or its DDP wrapper).
        pixels: normalised model input ``(B, 3, H, W)``.
        labels: ``(B,)`` ``int64`` classes.
        weights: which terms to compute (a zero weight skips the term and its forward pass).
        affine: the batch's transform for the equivariance term.
        grouping: ``"gumbel"`` or ``"softmax"``.

    Returns:
        Term name -> 0-dim tensor; combine with :meth:`LossWeights.total`.
    """
    batch = pixels.shape[0]
    equivariant = weights.equivariance > 0
    inputs = torch.cat([pixels, transform(pixels, affine)]) if equivariant else pixels
    output = model(inputs, grouping=grouping)
    maps = [layer[:batch] for layer in output.maps]
    terms: dict[str, torch.Tensor] = {}
    if weights.ce > 0:
        terms["ce"] = F.cross_entropy(output.logits[:batch], labels)
    if weights.consistency > 0 and output.fused:
        final = maps[-1]
        terms["consistency"] = _mean([consistency_loss(final, fused[:batch]) for fused in output.fused])
    for name, loss in _SHAPING.items():
        if getattr(weights, name) > 0:
            terms[name] = _mean([loss(layer) for layer in maps])
    if equivariant:
        terms["equivariance"] = _mean([equivariance_loss(layer[:batch], layer[batch:], affine) for layer in output.maps])
    if weights.orthogonality > 0:
        terms["orthogonality"] = orthogonality_loss(output.features[:batch])
    return terms
