"""Part descriptors: the mean of the (upsampled) ViT patch tokens under each part mask.

KLC describes a part by the mean of the patch tokens under it, with the patch grid upsampled
bilinearly to a finer token grid (64 x 64 in the reference code) and the part map resized to that
grid with nearest-neighbour. :data:`PREPROCESSINGS` chooses how: ``xaikit`` (symmetric
nearest-exact label resizing, border-clamped token upsampling) or ``notebook``, the reference
notebook's three steps exactly (OpenCV ``INTER_NEAREST``, which floors, for the label maps, and
``skimage.transform.resize``'s mirrored-border bilinear for the tokens; the image squash is PIL's
bilinear, set on the backbone by the KLC explainer). Upsampling is linear, so the mean over the upsampled grid equals a
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

__all__ = ["PREPROCESSINGS", "PooledParts", "interpolation_matrix", "part_grids", "pool_parts"]

PREPROCESSINGS = ("xaikit", "notebook")
"""How images, part maps and tokens are resized: ``xaikit`` (default) or ``notebook`` (the reference's)."""


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


def interpolation_matrix(source: int, target: int, border: str = "clamp") -> torch.Tensor:
    """The ``(target, source)`` matrix of 1-D linear interpolation with half-pixel centres (``align_corners=False``).

    Output sample ``g`` reads position ``(g + 0.5) * source / target - 0.5``. ``border`` says what lies
    beyond the ends: ``clamp`` repeats the end sample (torch's ``F.interpolate``), ``mirror``
    reflects about it, ``x[-1] = x[1]`` (``skimage.transform.resize``'s default ``mode="reflect"``,
    which is ``scipy.ndimage``'s ``mirror``). Every row sums to one; equal sizes give the identity.
    """
    position = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target) - 0.5
    if border == "clamp":
        position = position.clamp(0, source - 1)
    low = position.floor()
    fraction = position - low
    taps = torch.stack([low, low + 1]).long()  # (2, target)
    if source == 1:
        taps = torch.zeros_like(taps)
    else:
        period = 2 * (source - 1)
        taps = taps.abs() % period
        taps = torch.where(taps > source - 1, period - taps, taps)
    matrix = torch.zeros(target, source, dtype=torch.float64)
    rows = torch.arange(target).expand(2, target)
    matrix.index_put_((rows.flatten(), taps.flatten()), torch.stack([1 - fraction, fraction]).flatten(), accumulate=True)
    return matrix.float()


def part_grids(maps: list[PartMap], preprocessing: Preprocess, grid: tuple[int, int], nearest: str = "nearest-exact") -> torch.Tensor:
    """Part maps in image pixels -> label grids aligned with the model input, ``(B, G_h, G_w)`` ``int64``.

    Each map is first brought into the model-input frame exactly as the image was (squash, or
    resize and centre crop), then resized to the token grid, both nearest-neighbour (the reference:
    224 x 224, then 64 x 64). ``nearest`` is ``nearest-exact`` (the source pixel whose centre is
    nearest) or ``nearest`` (``floor(i * source / target)``, OpenCV's ``INTER_NEAREST``, as the
    notebook resizes; a squash only).
    """
    if nearest == "nearest-exact":
        frames = torch.stack([preprocessing.resize_labels(part_map.labels.cpu()) for part_map in maps])
    else:
        frames = torch.cat([F.interpolate(part_map.labels.cpu()[None, None].float(), size=preprocessing.size, mode="nearest")[0] for part_map in maps])
    return F.interpolate(frames[:, None].float(), size=grid, mode=nearest)[:, 0].round().long()


def pool_parts(patches: torch.Tensor, labels: torch.Tensor, border: str = "clamp") -> PooledParts:
    """Mean upsampled patch token under every part of every image (KLC's part descriptor).

    Args:
        patches: ``(B, h, w, D)`` patch tokens.
        labels: ``(B, G_h, G_w)`` ``int64`` part labels on the token grid (0 = background); the
            tokens are upsampled bilinearly from ``(h, w)`` to ``(G_h, G_w)``.
        border: ``clamp`` or ``mirror``, see :func:`interpolation_matrix`.

    Returns:
        :class:`PooledParts` for every (image, label) pair covering at least one grid cell,
        ordered by image, then label; background is never described.
    """
    batch, height, width, _ = patches.shape
    ids, inverse = torch.unique(labels, return_inverse=True)  # ids (U,), inverse (B, G_h, G_w)
    masks = F.one_hot(inverse, ids.numel()).permute(0, 3, 1, 2).float()  # (B, U, G_h, G_w)
    rows = interpolation_matrix(height, labels.shape[1], border).to(patches.device)  # (G_h, h)
    cols = interpolation_matrix(width, labels.shape[2], border).to(patches.device)  # (G_w, w)
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
