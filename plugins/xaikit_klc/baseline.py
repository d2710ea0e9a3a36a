"""The CLS-only baseline KLC is compared with: predict the class of the most similar prototype."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from xaikit.backbones.base import ViTBackbone
from xaikit.errors import XaikitError
from xaikit.features.extract import extract_features
from xaikit.interfaces import Backbone, Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit.validation import choice_option
from xaikit_klc.gallery import SELECTIONS, PrototypeIndex
from xaikit_klc.retrieval import build_index

__all__ = ["NearestPrototype"]


class NearestPrototype(Explainer):
    """Nearest prototype by CLS cosine similarity, over the same gallery KLC uses.

    Scores are, per class, the highest similarity of any of its prototypes (so top-5 is defined);
    the prediction is the class of the single most similar prototype.

    Args:
        backbone: a registered backbone name or a built one.
        prototypes_per_class: as for KLC (``None``: every training image, i.e. 1-nearest neighbour).
        prototype_selection: ``"kmeans"`` or ``"first"``, as for KLC.
        seed: k-means seed.
        device: device of a backbone built from its name.
        batch_size: images per forward pass.
        cache: cache features on disk.
        progress: show progress bars while fitting (feature extraction of the training split); ``None``
            (the default): when standard error is a terminal. Never recorded in a run's configuration.
    """

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        *,
        prototypes_per_class: int | None = 5,
        prototype_selection: str = "kmeans",
        seed: int = 0,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        progress: bool | None = None,
    ) -> None:
        from xaikit import get_registry

        choice_option("prototype selection", prototype_selection, SELECTIONS)
        self.backbone = get_registry().build("backbone", backbone, device=device)
        if not isinstance(self.backbone, ViTBackbone):
            raise XaikitError(f"nearest-prototype needs a ViT backbone, got {type(self.backbone).__name__}")
        self.prototypes_per_class = prototypes_per_class
        self.prototype_selection = prototype_selection
        self.seed = seed
        self.batch_size = batch_size
        self.cache = cache
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.classes: tuple[str, ...] = ()
        self.index: PrototypeIndex | None = None

    def fit(self, dataset: Dataset) -> NearestPrototype:
        """Choose the prototypes of ``dataset`` (the training split) and compute their CLS features."""
        self.classes = tuple(dataset.classes)
        self.index, _, _ = build_index(
            self.backbone, dataset, per_class=self.prototypes_per_class, selection=self.prototype_selection,
            seed=self.seed, batch_size=self.batch_size, cache=self.cache, progress=self.progress,
        )
        return self

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Predict the nearest prototype's class; details name that prototype and its similarity."""
        if self.index is None:
            raise XaikitError("nearest-prototype is not fitted: call fit(train_dataset) first")
        features = extract_features(self.backbone, list(samples), batch_size=self.batch_size, cache=self.cache)
        similarity, rows = self.index.retrieve(features.cls, len(self.index))  # (B, P), sorted
        per_class = torch.full((len(samples), len(self.classes)), -1.0)
        per_class.scatter_reduce_(1, self.index.labels[rows], similarity, reduce="amax")
        nearest = rows[:, 0]
        details = [
            {"prototype": {"gallery_index": int(row), "dataset_index": int(self.index.dataset_index[row]),
                           "image_id": int(self.index.image_ids[row]), "label": int(self.index.labels[row]),
                           "similarity": float(value)}}
            for row, value in zip(nearest, similarity[:, 0], strict=True)
        ]
        return Explanation(predictions=self.index.labels[nearest], scores=per_class, details=details)
