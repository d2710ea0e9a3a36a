"""Plain-loop oracle for consistency and stability, written from EvalProtoPNet's reference description.

One unit, one image and one part at a time, exactly in the order of hqhQAQ/EvalProtoPNet's
``util/eval_interpretability.py`` (``get_corresponding_object_parts``, ``evaluate_consistency``,
``evaluate_stability``) and ``util/local_parts.py`` (``in_bbox``, the annotation parsing). Each map is
upsampled on its own with ``F.interpolate`` (the reference uses ``cv2.resize``, same bicubic kernel)
in float64, where rounding cannot choose between near-equal pixels, and its peak is the first index
of ``np.where(map == map.max())``. Slow on purpose: it is the independent check of the vectorised
``xaikit_metrics.huang`` and the baseline of ``benchmarks/metrics_speed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

Unit = tuple[int, int]  # (class, explainer channel)
PartLabels = list[list[int]]  # per image: [part_id, x, y] of each visible part, on the grid


def in_bbox(loc: tuple[int, int], bbox: tuple[int, int, int, int]) -> bool:
    """The reference's ``in_bbox``: ``loc = (y, x)`` inside ``bbox = (y1, y2, x1, x2)``, ends inclusive."""
    return loc[0] >= bbox[0] and loc[0] <= bbox[1] and loc[1] >= bbox[2] and loc[1] <= bbox[3]


def grid_part_labels(keypoints: np.ndarray, visible: np.ndarray, corners: Sequence[int], grid: int) -> PartLabels:
    """Visible keypoints ``(P, 2)`` of one image mapped into the resized box crop, as the reference maps them."""
    bbox_x1, bbox_y1, bbox_x2, bbox_y2 = corners
    part_labels = []
    for part_id in range(len(keypoints)):
        if not visible[part_id]:
            continue
        loc_x = int(float(keypoints[part_id][0])) - bbox_x1
        loc_y = int(float(keypoints[part_id][1])) - bbox_y1
        ratio_x, ratio_y = loc_x / (bbox_x2 - bbox_x1), loc_y / (bbox_y2 - bbox_y1)
        part_labels.append([part_id, int(grid * ratio_x), int(grid * ratio_y)])
    return part_labels


def read_cub_part_labels(root: Path, image_ids: Sequence[int], grid: int) -> list[PartLabels]:
    """Parse ``bounding_boxes.txt`` and ``parts/part_locs.txt`` as ``util/local_parts.py`` does, for ``image_ids``."""
    id_to_bbox = {}
    for line in (root / "bounding_boxes.txt").read_text().splitlines():
        cts = line.split(" ")
        img_id, x, y, w, h = int(cts[0]), *(int(c.split(".")[0]) for c in cts[1:5])
        id_to_bbox[img_id] = (x, y, x + w, y + h)
    id_to_part_loc: dict[int, list[list[int]]] = {}
    for line in (root / "parts" / "part_locs.txt").read_text().splitlines():
        content = line.split(" ")
        img_id, part_id, visible = int(content[0]), int(content[1]), int(content[4])
        loc_x, loc_y = int(float(content[2])), int(float(content[3]))
        id_to_part_loc.setdefault(img_id, [])
        if visible == 1:
            id_to_part_loc[img_id].append([part_id, loc_x, loc_y])
    labels = []
    for img_id in image_ids:
        x1, y1, x2, y2 = id_to_bbox[img_id]
        labels.append([
            [part_id - 1, int(grid * ((loc_x - x1) / (x2 - x1))), int(grid * ((loc_y - y1) / (y2 - y1)))]
            for part_id, loc_x, loc_y in id_to_part_loc[img_id]
        ])
    return labels


def activated_region(activation_map: np.ndarray, grid: int, half_size: int) -> tuple[int, int, int, int]:
    """Upsample one ``(h, w)`` map bicubically, take its first maximum, return ``(y1, y2, x1, x2)``."""
    tensor = torch.from_numpy(np.ascontiguousarray(activation_map, dtype=np.float64))[None, None]
    upsampled = F.interpolate(tensor, size=(grid, grid), mode="bicubic", align_corners=False)[0, 0].numpy()
    max_indice = np.where(upsampled == upsampled.max())
    row, col = int(max_indice[0][0]), int(max_indice[1][0])
    return max(0, row - half_size), min(grid, row + half_size), max(0, col - half_size), min(grid, col + half_size)


def proto_to_part(
    maps: np.ndarray, part_labels: list[PartLabels], labels: np.ndarray, unit: Unit, parts: int, grid: int, half_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One unit's ``(n_c, parts)`` hit matrix and part mask over the images of its class."""
    test_image_label, channel = unit
    arr_ids = np.nonzero(labels == test_image_label)[0]
    hits = np.zeros((len(arr_ids), parts))
    mask = np.zeros((len(arr_ids), parts))
    for img_idx, image in enumerate(arr_ids):
        region_pred = activated_region(maps[image, channel], grid, half_size)
        for part_id, loc_x_gt, loc_y_gt in part_labels[image]:
            mask[img_idx, part_id] = 1
            if in_bbox((loc_y_gt, loc_x_gt), region_pred):
                hits[img_idx, part_id] = 1
    return hits, mask


def oracle_consistency(
    maps: np.ndarray, part_labels: list[PartLabels], labels: np.ndarray, units: Sequence[Unit], parts: int,
    grid: int = 224, half_size: int = 36, part_thresh: float = 0.8,
) -> tuple[float, list[bool], list[np.ndarray]]:
    """Consistency score, per-unit flags and per-unit part ratios; ``maps`` ``(N, K, h, w)``."""
    consistent, ratios = [], []
    for unit in units:
        hits, mask = proto_to_part(maps, part_labels, labels, unit, parts, grid, half_size)
        mask_sum = mask.sum(axis=0)
        mask_sum = np.where(mask_sum == 0, mask_sum + 1, mask_sum)
        mean_part_float = hits.sum(axis=0) / mask_sum
        ratios.append(mean_part_float)
        consistent.append(bool((mean_part_float >= part_thresh).sum() > 0))
    return float(np.mean(consistent) * 100), consistent, ratios


def oracle_stability(
    clean_maps: np.ndarray, noisy_maps: np.ndarray, part_labels: list[PartLabels], labels: np.ndarray,
    units: Sequence[Unit], parts: int, grid: int = 224, half_size: int = 36,
) -> tuple[float, list[float]]:
    """Stability score and per-unit stability from clean and noisy maps ``(N, K, h, w)``."""
    stability = []
    for unit in units:
        clean, _ = proto_to_part(clean_maps, part_labels, labels, unit, parts, grid, half_size)
        noisy, _ = proto_to_part(noisy_maps, part_labels, labels, unit, parts, grid, half_size)
        is_equal = (np.abs(clean - noisy).sum(axis=-1) == 0).astype(np.float64)
        stability.append(float(is_equal.mean()))
    return float(np.mean(stability) * 100), stability
