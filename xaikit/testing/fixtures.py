"""Tiny, deterministic data and helpers for testing xaikit components: no files, no downloads.

Every tiny image shows one coloured object, made of three parts (``"head"``, ``"body"``,
``"tail"``), on a noisy grey background. The object's hue gives its class, so a simple classifier can
tell the classes apart. Each sample carries the annotations a real dataset has: a part mask, one
visible keypoint per part (the part's centroid), a bounding box and a foreground mask.
"""

from __future__ import annotations

import colorsys
import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.errors import DatasetError
from xaikit.interfaces import Backbone, Dataset
from xaikit.types import Sample

__all__ = ["TINY_PARTS", "TinyDataset", "demo_backbone", "image_batch", "tiny_sample", "tiny_samples"]

TINY_PARTS: tuple[str, ...] = ("head", "body", "tail")
"""Part names of every tiny sample: part mask label ``k`` is ``TINY_PARTS[k - 1]``."""

_SPLITS = ("all", "train", "test")


def _class_colour(label: int, classes: int) -> np.ndarray:
    """A saturated RGB colour per class, hues evenly spaced, ``(3,)`` float in ``[0, 255]``."""
    return 255.0 * np.array(colorsys.hsv_to_rgb(label / classes, 0.85, 0.95))


def tiny_sample(
    label: int, *, size: int | tuple[int, int] = 64, classes: int = 2, seed: int = 0, image_id: int = 1, is_train: bool | None = None
) -> Sample:
    """One tiny annotated image of class ``label``; the same arguments always give the same sample.

    Args:
        label: class index in ``[0, classes)``; it sets the object's hue.
        size: image side, or ``(H, W)``; at least 16 pixels each.
        classes: number of classes the hues are spread over.
        seed: with ``image_id``, seeds the object's position and the background noise.
        image_id: the sample's id.
        is_train: the sample's split flag.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if height < 16 or width < 16:
        raise ValueError(f"tiny samples need at least 16 x 16 pixels, got {height} x {width}")
    rng = np.random.default_rng([seed, image_id])
    image = rng.normal(rng.uniform(90, 160), 12, (height, width, 3))
    box_w, box_h = round(0.6 * width), round(0.36 * height)
    x0, y0 = int(rng.integers(0, width - box_w + 1)), int(rng.integers(0, height - box_h + 1))
    quarter = box_w // 4
    part_mask = np.zeros((height, width), np.uint8)
    part_mask[y0 : y0 + box_h, x0 : x0 + quarter] = 1  # head
    part_mask[y0 : y0 + box_h, x0 + quarter : x0 + box_w - quarter] = 2  # body
    part_mask[y0 + box_h // 4 : y0 + box_h - box_h // 4, x0 + box_w - quarter : x0 + box_w] = 3  # tail
    colour = _class_colour(label, classes)
    for part, shade in enumerate((1.0, 0.75, 0.5), start=1):
        image[part_mask == part] = colour * shade
    ys, xs = np.indices((height, width))
    keypoints = np.array(
        [[xs[part_mask == part].mean() + 0.5, ys[part_mask == part].mean() + 0.5] for part in range(1, len(TINY_PARTS) + 1)],
        np.float32,
    )
    return Sample(
        image=np.clip(image, 0, 255).astype(np.uint8),
        label=label,
        image_id=image_id,
        keypoints=keypoints,
        visible=np.ones(len(TINY_PARTS), bool),
        part_names=TINY_PARTS,
        bbox=np.array([x0, y0, box_w, box_h], np.float32),
        part_mask=part_mask,
        foreground=part_mask > 0,
        is_train=is_train,
    )


def tiny_samples(n: int = 4, size: int | tuple[int, int] = 64, *, classes: int = 2, seed: int = 0) -> list[Sample]:
    """``n`` tiny annotated samples, labelled ``0, 1, ..., classes - 1, 0, ...`` in turn, ids ``1..n``.

    Args:
        n: number of samples.
        size: image side, or ``(H, W)``.
        classes: number of classes.
        seed: changes object positions and backgrounds.
    """
    return [tiny_sample(index % classes, size=size, classes=classes, seed=seed, image_id=index + 1) for index in range(n)]


class TinyDataset(Dataset):
    """An in-memory :class:`~xaikit.Dataset` of tiny annotated samples with a train/test split.

    Samples are ordered class by class; the first ``ceil(per_class / 2)`` of each class are the
    training split. :meth:`split` returns a view of the whole dataset, as :class:`~xaikit.CUBDataset`
    does.

    Args:
        classes: number of classes, named ``"class 0"``, ``"class 1"``, ...
        per_class: images per class, at least 2.
        size: image side, or ``(H, W)``.
        seed: changes object positions and backgrounds.
    """

    def __init__(self, classes: int = 2, per_class: int = 4, size: int | tuple[int, int] = 64, seed: int = 0) -> None:
        if classes < 1 or per_class < 2:
            raise DatasetError(f"a tiny dataset needs at least 1 class and 2 images per class, got {classes} and {per_class}")
        self.classes = tuple(f"class {label}" for label in range(classes))
        self.part_names = TINY_PARTS
        train = -(-per_class // 2)
        self._samples = [
            tiny_sample(label, size=size, classes=classes, seed=seed, image_id=label * per_class + rank + 1, is_train=rank < train)
            for label in range(classes)
            for rank in range(per_class)
        ]
        self._indices = np.arange(len(self._samples))
        self.split_name = "all"

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        return self._samples[int(self._indices[index])]

    def __repr__(self) -> str:
        return f"TinyDataset(split={self.split_name!r}, images={len(self)}, classes={len(self.classes)})"

    @property
    def labels(self) -> np.ndarray:
        """Class index of every sample in this view, ``(N,)`` ``int64``."""
        return np.array([self._samples[index].label for index in self._indices], np.int64)

    def split(self, name: str) -> TinyDataset:
        """A view of the ``"train"``, ``"test"`` or ``"all"`` samples of the whole dataset.

        Raises:
            DatasetError: for any other name.
        """
        if name not in _SPLITS:
            raise DatasetError(f"unknown split '{name}'; use one of {', '.join(_SPLITS)}")
        view = copy.copy(self)
        everything = np.arange(len(self._samples))
        train = np.array([sample.is_train for sample in self._samples])
        view._indices = everything if name == "all" else everything[train == (name == "train")]
        view.split_name = name
        return view


def image_batch(samples: Sequence[Sample], size: int = 64) -> torch.Tensor:
    """The images of ``samples`` as explainers take them: ``(B, 3, size, size)`` float in ``[0, 1]``.

    Each image is resized (bilinear, antialiased, aspect ratio not kept) to ``size x size``.
    """
    if not samples:
        return torch.zeros(0, 3, size, size)
    images = [torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255 for sample in samples]
    resized = [F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False) for image in images]
    return torch.cat(resized).clamp(0, 1)


def demo_backbone(device: str = "cpu") -> Backbone:
    """The real ``demo-vit`` backbone (a small ViT shipped with xaikit's weights), on ``device``."""
    import xaikit

    return xaikit.create("backbone", "demo-vit", device=device)
