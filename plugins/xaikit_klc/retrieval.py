"""Building the prototype index on a training set: selection, decoding and CLS features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.base import ViTBackbone
from xaikit.errors import DatasetError
from xaikit.features.extract import extract_features
from xaikit.interfaces import Dataset
from xaikit.types import Features, Sample
from xaikit_klc.gallery import PrototypeIndex, select_prototypes

__all__ = ["build_index"]


def build_index(
    backbone: ViTBackbone,
    dataset: Dataset,
    *,
    per_class: int | None,
    selection: str,
    seed: int,
    batch_size: int,
    cache: bool,
    progress: bool,
) -> tuple[PrototypeIndex, list[Sample], Features]:
    """Choose the prototypes of ``dataset``, decode them and compute their features.

    ``"kmeans"`` selection needs the CLS features of every image of a class with more images than
    ``per_class``; they come from (and go to) the feature cache.

    Returns:
        The index, the decoded prototype samples and their :class:`~xaikit.Features` (CPU).
    """
    labels = np.asarray(dataset.labels, np.int64)
    if len(labels) == 0:
        raise DatasetError("cannot fit on an empty dataset: the training split has no images")
    counts = np.bincount(labels)
    cls = None
    if selection == "kmeans" and per_class is not None and counts.max() > per_class:
        cls = extract_features(backbone, dataset, batch_size=batch_size, cache=cache, progress=progress).cls
    chosen = select_prototypes(labels, per_class, selection, cls, seed)
    samples = [dataset[int(index)] for index in chosen]
    features = extract_features(backbone, samples, batch_size=batch_size, cache=cache, progress=progress)
    index = PrototypeIndex(
        dataset_index=torch.as_tensor(chosen, dtype=torch.int64),
        labels=torch.as_tensor(labels[chosen], dtype=torch.int64),
        image_ids=torch.as_tensor([sample.image_id for sample in samples], dtype=torch.int64),
        cls=F.normalize(features.cls.float(), dim=1),
    )
    return index, samples, features
