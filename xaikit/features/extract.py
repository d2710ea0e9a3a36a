"""Batched feature extraction: decode in loader workers, run the backbone in batches, cache per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from xaikit.backbones.base import ViTBackbone
from xaikit.features.cache import FeatureCache
from xaikit.interfaces import Dataset
from xaikit.types import Features, Sample

ImageSource = Dataset | Sequence[Sample] | Sequence[np.ndarray]


class _Preprocessed(TorchDataset):
    """Item ``i``: the preprocessed image ``(3, H, W)`` and the content key of the decoded image."""

    def __init__(self, source: ImageSource, backbone: ViTBackbone) -> None:
        self.source = source
        self.preprocessing = backbone.preprocessing

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        item = self.source[index]
        image = item.image if isinstance(item, Sample) else item
        return self.preprocessing.one(image), FeatureCache.image_key(image)


def _as_tensors(features: Features, row: int) -> dict[str, torch.Tensor]:
    tensors = {"cls": features.cls[row], "patches": features.patches[row]}
    tensors.update({f"layer.{index}": value[row] for index, value in features.layers.items()})
    return tensors


def _stack(rows: list[dict[str, torch.Tensor]], layers: Sequence[int]) -> Features:
    return Features(
        cls=torch.stack([row["cls"] for row in rows]).float(),
        patches=torch.stack([row["patches"] for row in rows]).float(),
        layers={index: torch.stack([row[f"layer.{index}"] for row in rows]).float() for index in layers},
    )


def extract_features(
    backbone: ViTBackbone,
    images: ImageSource,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    cache: FeatureCache | bool = True,
    progress: bool = False,
) -> Features:
    """Features of every image, computed in batches and cached on disk.

    Images are decoded and preprocessed by ``num_workers`` loader processes; the backbone runs
    without gradients (float16 autocast on CUDA). With a cache, an image whose features are
    stored for this backbone (weights fingerprint, preprocessing and layers) is never sent to the
    model; features are stored as float16, so cold and warm runs return bit-identical tensors.

    Args:
        backbone: a :class:`~xaikit.backbones.ViTBackbone`.
        images: a :class:`~xaikit.Dataset`, a sequence of :class:`~xaikit.Sample`, or RGB arrays
            ``(H, W, 3)`` ``uint8``.
        batch_size: images per forward pass.
        num_workers: loader processes for decoding (0 = in this process).
        cache: a :class:`FeatureCache`, ``True`` for the default one in the user cache directory,
            or ``False`` to compute everything in float32 without storing it.
        progress: show a progress bar on the terminal.

    Returns:
        :class:`~xaikit.Features` on the CPU, float32: ``cls`` ``(N, D)``, ``patches``
        ``(N, h, w, D)``, ``layers`` {index: ``(N, h, w, D)``}, in the order of ``images``.
    """
    store = FeatureCache() if cache is True else cache or None
    namespace = backbone.cache_namespace if store is not None else ""
    loader = DataLoader(
        _Preprocessed(images, backbone),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=backbone.device.type == "cuda",
        persistent_workers=False,
    )
    rows: list[dict[str, torch.Tensor]] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("extracting features", total=len(loader.dataset))
        for pixels, keys in loader:
            rows.extend(_batch_rows(backbone, pixels, keys, store, namespace))
            bar.advance(task, len(keys))
    if not rows:
        raise ValueError("extract_features got no images")
    return _stack(rows, backbone.layers)


def _batch_rows(
    backbone: ViTBackbone, pixels: torch.Tensor, keys: Sequence[str], store: FeatureCache | None, namespace: str
) -> list[dict[str, torch.Tensor]]:
    """One dict of tensors per image: cached rows loaded, missing rows computed (and stored)."""
    cached: list[dict[str, Any] | None] = [store.load(namespace, key) for key in keys] if store else [None] * len(keys)
    missing = [index for index, row in enumerate(cached) if row is None]
    if missing:
        features = backbone.features(pixels[missing])
        for position, index in enumerate(missing):
            tensors = {name: value.cpu() for name, value in _as_tensors(features, position).items()}
            cached[index] = store.save(namespace, keys[index], tensors) if store else tensors
    return cached  # type: ignore[return-value]
