"""IVPT's training objective: every loss term of one batch, from one batched forward pass.

The terms (reference code, ``../shared/reference/ivpt-and-metrics.md`` section 4), each weighted by
:class:`~xaikit_ivpt.losses.LossWeights`:

* ``ce``: cross-entropy of the logits (the mean of the part scores);
* ``consistency``: KL(final-layer maps || fused maps), averaged over the intermediate layers (the
  final maps detached, as the reference does, unless ``LossOptions.consistency_target`` says otherwise);
* ``presence``, ``background``, ``entropy``, ``tv``: PDiscoFormer's part-shaping losses on every
  layer's maps, averaged over layers;
* ``equivariance``: one random affine transform per batch; the transformed images go through the
  network in the same forward pass as the originals, and their maps, transformed back, should
  equal the originals' (averaged over layers);
* ``orthogonality``: of the final modulated part features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F

from xaikit_ivpt.geometry import Affine, transform
from xaikit_ivpt.losses import (
    LossOptions,
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

def _shaping(options: LossOptions) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The part-shaping terms computed on every layer's maps, configured by ``options``."""
    return {
        "presence": presence_loss,
        "background": partial(background_presence_loss, mask=options.background_mask),
        "entropy": entropy_loss,
        "tv": partial(total_variation_loss, normalisation=options.tv_normalisation),
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
    options: LossOptions | None = None,
) -> dict[str, torch.Tensor]:
    """Every loss term with a non-zero weight for one batch.

    Args:
        model: the :class:`~xaikit_ivpt.model.IVPTModel` (or its DDP wrapper).
        pixels: normalised model input ``(B, 3, H, W)``.
        labels: ``(B,)`` ``int64`` classes.
        weights: which terms to compute (a zero weight skips the term and its forward pass).
        affine: the batch's transform for the equivariance term.
        grouping: ``"gumbel"`` or ``"softmax"``.
        options: how the terms are computed (default: the reference code's, :class:`LossOptions`).

    Returns:
        Term name -> 0-dim tensor; combine with :meth:`LossWeights.total`.
    """
    options = options or LossOptions()
    batch = pixels.shape[0]
    equivariant = weights.equivariance > 0
    inputs = torch.cat([pixels, transform(pixels, affine)]) if equivariant else pixels
    output = model(inputs, grouping=grouping)
    maps = [layer[:batch] for layer in output.maps]
    terms: dict[str, torch.Tensor] = {}
    if weights.ce > 0:
        terms["ce"] = F.cross_entropy(output.logits[:batch], labels)
    if weights.consistency > 0 and output.fused:
        final = maps[-1].detach() if options.consistency_target == "detached" else maps[-1]
        terms["consistency"] = _mean([consistency_loss(final, fused[:batch]) for fused in output.fused])
    for name, loss in _shaping(options).items():
        if getattr(weights, name) > 0:
            terms[name] = _mean([loss(layer) for layer in maps])
    if equivariant:
        equivariance = partial(equivariance_loss, background=options.equivariance_background, masked=options.equivariance_mask)
        terms["equivariance"] = _mean([equivariance(layer[:batch], layer[batch:], affine) for layer in output.maps])
    if weights.orthogonality > 0:
        terms["orthogonality"] = orthogonality_loss(output.features[:batch])
    return terms
