"""Name IVPT's anonymous concepts after the dataset parts they hit most often.

IVPT learns its concepts without part labels, so they are only numbered. After training (or on a
loaded checkpoint), each concept can be named after the annotated part whose keypoint it hits most
often, with the hit rule of Huang et al.'s consistency metric (:mod:`xaikit_metrics.huang`), reused
here unchanged: every image is cropped to its bounding box and resized to the model's input, each
concept's map is upsampled to a ``grid x grid`` frame, the ``2 * half_size`` box around its peak is
the concept's activated region, and a visible part whose keypoint lies inside is hit. A concept's
hit rate for a part is the fraction of the images where that part is visible in which it is hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from xaikit.errors import XaikitError
from xaikit.interfaces import Dataset
from xaikit_metrics.huang import part_hits, peak_boxes, prepare_batch

__all__ = ["names_from_rates", "part_hit_rates"]

LayerMaps = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def part_hit_rates(
    layer_maps: LayerMaps,
    dataset: Dataset,
    size: tuple[int, int],
    *,
    grid: int = 224,
    half_size: int = 36,
    batch_size: int = 32,
) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """How often each concept of each layer hits each annotated part over ``dataset``.

    Args:
        layer_maps: box crops ``(B, 3, H, W)`` float in ``[0, 1]`` -> one ``(B, K_l, h_l, w_l)``
            foreground concept map per layer.
        dataset: samples with part keypoints and a bounding box (CUB, synthetic-birds).
        size: ``(H, W)`` the crops are resized to (the model's input size).
        grid: side of the frame peaks and keypoints are compared on (224, Huang et al.'s).
        half_size: half the side of a concept's activated region on that frame (36, Huang et al.'s).
        batch_size: images per model call.

    Returns:
        Per layer a ``(K_l, P)`` float64 hit rate in ``[0, 1]`` (0 for a part never visible), and
        the ``P`` part names.

    Raises:
        XaikitError: the dataset is empty, or an image has no part keypoints or no bounding box.
    """
    if len(dataset) == 0:
        raise XaikitError("naming IVPT concepts by parts needs a dataset with images, and this one is empty")
    hits: list[torch.Tensor] = []
    visible_counts: torch.Tensor | None = None
    part_names: tuple[str, ...] = ()
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        missing = next((sample for sample in samples if not sample.part_names or sample.bbox is None), None)
        if missing is not None:
            raise XaikitError(
                f"naming IVPT concepts by parts needs part keypoints and a bounding box for every image, and image "
                f"{missing.image_id} lacks them; use a dataset with part annotations (cub, synthetic-birds)"
            )
        part_names = tuple(samples[0].part_names)
        images, keypoints, visible = prepare_batch(samples, grid, size)
        with torch.no_grad():
            maps = layer_maps(images)
        counts = [part_hits(peak_boxes(layer.float().cpu(), grid, half_size), keypoints, visible).sum(0) for layer in maps]
        hits = counts if not hits else [total + count for total, count in zip(hits, counts, strict=True)]
        seen = visible.sum(0)
        visible_counts = seen if visible_counts is None else visible_counts + seen
    assert visible_counts is not None
    return [total.double() / visible_counts.clamp_min(1).double() for total in hits], part_names


def names_from_rates(rates: torch.Tensor, part_names: Sequence[str]) -> list[str]:
    """Each concept's name: the part it hits most often (``rates`` ``(K, P)``), or ``concept k`` if it hits none.

    Concepts that share a part are told apart by a number in concept order: ``head``, ``head 2``.
    """
    best = rates.argmax(dim=1).tolist()
    hit = (rates.amax(dim=1) > 0).tolist()
    names = [str(part_names[part]) if any_hit else f"concept {k + 1}" for k, (part, any_hit) in enumerate(zip(best, hit))]
    seen: dict[str, int] = {}
    numbered = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        numbered.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return numbered
