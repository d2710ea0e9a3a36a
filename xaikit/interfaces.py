"""The interfaces every xaikit component implements, one abstract class per kind.

A plugin registers a factory for one of these kinds (see :mod:`xaikit.hookspecs`);
:func:`xaikit.create` checks that what the factory builds is an instance of the kind's class. Shapes
follow the conventions in :mod:`xaikit.types`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from xaikit.errors import CapabilityError
from xaikit.types import Explanation, Features, Match, MetricResult, PartMap, Sample

if TYPE_CHECKING:
    from xaikit.backbones.preprocess import Preprocess

__all__ = [
    "Backbone",
    "Capability",
    "Dataset",
    "Explainer",
    "Matcher",
    "Metric",
    "PredictionMetric",
    "Segmenter",
]


class Dataset(ABC):
    """A finite, indexable source of :class:`~xaikit.Sample` objects.

    Attributes:
        classes: class names; ``Sample.label`` indexes this list.
        part_names: names of the keypoint parts; ``Sample.keypoints`` rows follow this order.
    """

    kind: ClassVar[str] = "dataset"
    classes: Sequence[str]
    part_names: Sequence[str]

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def __getitem__(self, index: int) -> Sample:
        """Decode and return sample ``index`` (``0 <= index < len(self)``)."""

    @property
    @abstractmethod
    def labels(self) -> np.ndarray:
        """Class index of every sample, ``(N,)`` ``int64``, without decoding any image."""

    @abstractmethod
    def split(self, name: str) -> Dataset:
        """The ``"train"``, ``"test"`` or ``"all"`` part of this dataset, as a dataset of its own."""

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]


class Backbone(ABC):
    """A vision transformer that turns images into :class:`~xaikit.Features`.

    Attributes:
        embed_dim: ``D``, the feature dimension.
        patch_size: side of one square patch in input pixels.
    """

    kind: ClassVar[str] = "backbone"
    embed_dim: int
    patch_size: int

    @abstractmethod
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Resize and normalise RGB images ``(H, W, 3)`` ``uint8`` to the model input ``(B, 3, S, S)``."""

    @abstractmethod
    def features(self, pixels: torch.Tensor) -> Features:
        """Run the model on preprocessed ``(B, 3, S, S)`` input; no gradients unless the caller asks."""

    def __call__(self, images: Sequence[np.ndarray]) -> Features:
        """Preprocess ``images`` and return their :class:`~xaikit.Features`."""
        return self.features(self.preprocess(images))


class Segmenter(ABC):
    """Splits images into labelled parts.

    Attributes:
        vocabulary: the part names this segmenter looks for, in label order (label ``i + 1`` is
            ``vocabulary[i]`` unless the segmenter documents otherwise).
        joint: ``True`` when label ids are only consistent *within* one :meth:`segment` call
            (co-segmentation of a set, anonymous parts); ``False`` when they always mean the same
            vocabulary entry.
        needs_annotations: ``True`` when it reads a sample's annotations (part masks, keypoints)
            rather than its pixels, so it cannot segment a bare image.
    """

    kind: ClassVar[str] = "segmenter"
    joint: ClassVar[bool] = False
    needs_annotations: ClassVar[bool] = False
    vocabulary: Sequence[str]

    @abstractmethod
    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """Return one :class:`~xaikit.PartMap` per sample, each the size of the sample's image."""

    @property
    def fingerprint(self) -> str | None:
        """What determines this segmenter's output for a given sample (model weights, options), or ``None``.

        Callers such as KLC cache part maps on disk under this key together with the sample's
        content; ``None`` (the default) means "do not cache": always recompute.
        """
        return None


class Matcher(ABC):
    """Pairs up two sets of descriptors.

    Attributes:
        similarity: what :attr:`Match.similarity <xaikit.Match.similarity>` holds: ``"cosine"`` (the
            default: the cosine similarity of the two paired rows, which KLC reports and its figures
            show), or the name of another measure the matcher documents. The contract suite checks
            the cosine values.
    """

    kind: ClassVar[str] = "matcher"
    similarity: ClassVar[str] = "cosine"

    @abstractmethod
    def match(self, query: torch.Tensor, candidates: torch.Tensor) -> Match:
        """Match query descriptors ``(n, D)`` to candidate descriptors ``(m, D)``.

        Returns:
            A :class:`~xaikit.Match` whose indices point into the rows of ``query`` and ``candidates``.
        """


class Capability(str, enum.Enum):
    """What an explainer can provide, and so what a metric may require of it."""

    PREDICTIONS = "predictions"
    """:meth:`Explainer.explain` returns predictions and class scores (every explainer)."""
    CONCEPT_MAPS = "concept-maps"
    """:meth:`Explainer.concept_maps` returns ``(B, K, h, w)`` concept activations."""
    DIFFERENTIABLE = "differentiable"
    """:meth:`Explainer.forward` is a differentiable map from pixels to class scores."""


class Explainer(ABC):
    """A classifier that explains its decisions.

    Subclasses set :attr:`capabilities` to what they implement beyond predictions; metrics are
    refused, with a clear message, when an explainer lacks what they require.
    """

    kind: ClassVar[str] = "explainer"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.PREDICTIONS})
    concept_mode: ClassVar[str] = "class-specific"
    """How the ``K`` channels of :meth:`concept_maps` relate to the ``C`` classes: ``"class-specific"``
    (``K = C x P``, channel ``p`` belongs to class ``p // P``: ProtoPNet's prototypes, one attribution
    map per class) or ``"class-agnostic"`` (concepts shared by every class: IVPT's and KLC's parts).
    The consistency and stability metrics score in this mode unless given ``mode=``."""
    parallel_fit: ClassVar[bool] = False
    """Whether :meth:`fit` is itself data-parallel under ``torchrun`` (IVPT trains with
    ``DistributedDataParallel``), so that ``xaikit bench`` must call it in every process at once.
    When ``False`` (the default), ``xaikit bench`` fits in process 0 first, and in the others once it
    is done, so that what the fit caches on disk (features, gallery parts) is computed once."""

    @abstractmethod
    def fit(self, dataset: Dataset) -> Explainer:
        """Prepare on the training data (build a gallery, train, ...) and return ``self``."""

    @abstractmethod
    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Classify ``samples`` and explain each decision."""

    def describe_fit(self, dataset: Dataset, name: str) -> str:
        """What :meth:`fit` is about to do with ``dataset``, in one line for the user (``name``: the explainer's registered name).

        The default says ``fitting NAME on N training images``; an explainer that only loads a
        checkpoint says so instead.
        """
        return f"fitting {name} on {len(dataset)} training images"

    @property
    def concept_names(self) -> Sequence[str] | None:
        """Names of the ``K`` concepts of :meth:`concept_maps`, or ``None``."""
        return None

    @property
    def preprocessing(self) -> Preprocess | None:
        """How this explainer turns RGB images into its model input (size, resize, normalisation), or ``None``.

        Metrics that perturb or re-render images (consistency, stability) read it to hand the
        explainer an image already at its input size and to add noise in its normalised input
        space. The default is the ``preprocessing`` of the explainer's ``backbone`` attribute when it
        has one (every ViT backbone does), else ``None``: the explainer does not say, and such
        metrics use their own frame and ImageNet normalisation.
        """
        from xaikit.backbones.preprocess import Preprocess

        found = getattr(getattr(self, "backbone", None), "preprocessing", None)
        return found if isinstance(found, Preprocess) else None

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Concept activations for RGB images ``(B, 3, H, W)`` float in ``[0, 1]``.

        Metrics such as stability perturb the images before calling this, so values may lie
        slightly outside ``[0, 1]``. Returns ``(B, K, h, w)`` float, higher = more active; a metric
        upsamples the ``h x w`` grid to its own geometry.

        Raises:
            CapabilityError: when the explainer has no concept maps (the default).
        """
        raise CapabilityError(f"explainer {type(self).__name__} does not provide concept maps")

    def render(self, sample: Sample, detail: Mapping[str, Any]) -> np.ndarray:
        """Draw the explanation of one image: ``detail`` is its entry of :attr:`Explanation.details`.

        Returns:
            An RGB figure ``(H, W, 3)`` ``uint8``.

        Raises:
            CapabilityError: when the explainer draws no figures (the default).
        """
        raise CapabilityError(f"explainer {type(self).__name__} does not draw explanations")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable class scores ``(B, C)`` for RGB images ``(B, 3, H, W)`` float in ``[0, 1]``.

        Raises:
            CapabilityError: when the explainer is not differentiable (the default).
        """
        raise CapabilityError(f"explainer {type(self).__name__} is not differentiable")


class Metric(ABC):
    """Scores an explainer on a dataset.

    Attributes:
        name: the registered name, repeated in each :class:`~xaikit.MetricResult`.
        higher_is_better: the direction in which the score improves.
        requires: capabilities the explainer must have.
    """

    kind: ClassVar[str] = "metric"
    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.PREDICTIONS})

    def check(self, explainer: Explainer) -> None:
        """Refuse an explainer that lacks a required capability.

        Raises:
            CapabilityError: naming the metric, the explainer and what is missing.
        """
        missing = sorted(c.value for c in self.requires - explainer.capabilities)
        if missing:
            raise CapabilityError(
                f"metric '{self.name}' needs {', '.join(missing)} from the explainer, "
                f"which {type(explainer).__name__} does not provide"
            )

    @abstractmethod
    def evaluate(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """Score a fitted ``explainer`` on ``dataset`` (usually the test split)."""

    def __call__(self, explainer: Explainer, dataset: Dataset) -> MetricResult:
        """:meth:`check` the explainer, then :meth:`evaluate` it."""
        self.check(explainer)
        return self.evaluate(explainer, dataset)


class PredictionMetric(Metric):
    """A metric computed from predictions alone (class scores and labels), such as accuracy.

    The benchmark runner computes every image's scores once and hands them to :meth:`score`, so a
    resumed run never recomputes finished images; :meth:`evaluate` does the same for a direct call.
    """

    @abstractmethod
    def score(self, labels: torch.Tensor, scores: torch.Tensor) -> MetricResult:
        """Score predictions: true classes ``(N,)`` ``int64`` and class scores ``(N, C)`` (higher = more likely)."""

    def per_image(self, labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        """Each image's share of the value, ``(N,)`` float, whose mean is :meth:`score`'s value; ``None`` if the metric is no mean.

        Optional: with it, ``xaikit bench``'s bootstrap interval is one vectorised resampling instead
        of one :meth:`score` call per resample.
        """
        return None

    def evaluate(self, explainer: Explainer, dataset: Dataset, batch_size: int = 32) -> MetricResult:
        """Explain ``dataset`` in batches of ``batch_size`` and :meth:`score` the class scores."""
        scores = []
        for start in range(0, len(dataset), batch_size):
            batch = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
            scores.append(explainer.explain(batch).scores.float().cpu())
        return self.score(torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64), torch.cat(scores))
