"""Part descriptors: the mean of the (upsampled) ViT patch tokens under each part mask.

KLC describes a part by the mean of the patch tokens under it, with the patch grid upsampled
bilinearly to a finer token grid (64 x 64 in the reference code) and the part map resized to that
grid with nearest-neighbour. Upsampling is linear, so the mean over the upsampled grid equals a
weighted mean of the *original* patch tokens whose weights are the part mask pulled back through
the interpolation (``A_h^T M A_w``). :func:`pool_parts` computes it that way: the same numbers
without ever materialising the ``(G, G, D)`` upsampled tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xaikit.backbones.preprocess import Preprocess
from xaikit.types import PartMap

__all__ = ["PooledParts", "interpolation_matrix", "part_grids", "pool_parts"]


@dataclass(frozen=True)
class PooledParts:
    """Descriptors of the parts present in a batch of images.

    Attributes:
        image: which image each part belongs to, ``(L,)`` ``int64``.
        label: the part's label id in its image's part map, ``(L,)`` ``int64`` (never 0).
        descriptor: mean patch token under the part, ``(L, D)`` float32.
        area: number of token-grid cells the part covers, ``(L,)`` ``int64``.
    """

    image: torch.Tensor
    label: torch.Tensor
    descriptor: torch.Tensor
    area: torch.Tensor

    def of(self, index: int) -> torch.Tensor:
        """Row indices of image ``index``'s parts, ``(L_i,)``, in ascending label order."""
        return torch.nonzero(self.image == index).flatten()


def interpolation_matrix(source: int, target: int) -> torch.Tensor:
    """The ``(target, source)`` matrix of 1-D linear interpolation (``align_corners=False``).

    Row ``g`` holds the weights of the ``source`` samples that make output sample ``g``; every row
    sums to one. Equal sizes give the identity.
    """
    if source == target:
        return torch.eye(source)
    unit = torch.eye(source).unsqueeze(0)  # (1, source channels = one-hot inputs, source length)
    return F.interpolate(unit, size=target, mode="linear", align_corners=False)[0].T


def part_grids(maps: list[PartMap], preprocessing: Preprocess, grid: tuple[int, int]) -> torch.Tensor:
    """Part maps in image pixels -> label grids aligned with the model input, ``(B, G_h, G_w)`` ``int64``.

    Each map is first brought into the model-input frame exactly as the image was (squash, or
    resize and centre crop), then resized to the token grid, both nearest-neighbour (the reference:
    224 x 224, then 64 x 64).
    """
    frames = [preprocessing.resize_labels(part_map.labels.cpu()) for part_map in maps]
    stacked = torch.stack(frames)[:, None].float()
    return F.interpolate(stacked, size=grid, mode="nearest-exact")[:, 0].round().long()


def pool_parts(patches: torch.Tensor, labels: torch.Tensor) -> PooledParts:
    """Mean upsampled patch token under every part of every image (KLC's part descriptor).

    Args:
        patches: ``(B, h, w, D)`` patch tokens.
        labels: ``(B, G_h, G_w)`` ``int64`` part labels on the token grid (0 = background); the
            tokens are upsampled bilinearly from ``(h, w)`` to ``(G_h, G_w)``.

    Returns:
        :class:`PooledParts` for every (image, label) pair covering at least one grid cell,
        ordered by image, then label; background is never described.
    """
    batch, height, width, _ = patches.shape
    ids, inverse = torch.unique(labels, return_inverse=True)  # ids (U,), inverse (B, G_h, G_w)
    masks = F.one_hot(inverse, ids.numel()).permute(0, 3, 1, 2).float()  # (B, U, G_h, G_w)
    rows = interpolation_matrix(height, labels.shape[1]).to(patches.device)  # (G_h, h)
    cols = interpolation_matrix(width, labels.shape[2]).to(patches.device)  # (G_w, w)
    weights = torch.einsum("gi,bugv,vj->buij", rows, masks.to(patches.device), cols)  # (B, U, h, w)
    sums = torch.einsum("buij,bijd->bud", weights, patches.float())  # (B, U, D)
    area = masks.sum(dim=(2, 3)).long().to(patches.device)  # (B, U)
    keep = (area > 0) & (ids != 0).to(patches.device).unsqueeze(0)
    image, slot = torch.nonzero(keep, as_tuple=True)
    return PooledParts(
        image=image.cpu(),
        label=ids.to(patches.device)[slot].cpu(),
        descriptor=(sums[image, slot] / area[image, slot].unsqueeze(1)).cpu(),
        area=area[image, slot].cpu(),
    )
