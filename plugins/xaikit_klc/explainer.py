"""KLC, Keypoint Labeling Classifiers: training-free classification by matching labelled parts.

Wickstrøm, Dorszewski, Chen et al., "Keypoint Counting Classifiers" (arXiv 2512.17891), with the
part-labelling variant of chensy618/SuperpixelCUB. For a query image:

1. retrieve the ``k`` prototypes whose CLS features are most similar (cosine);
2. segment the query and the prototypes into labelled parts;
3. describe each part by the mean of the (upsampled) patch tokens under it;
4. match query parts against the pooled parts of the ``k`` prototypes (mutual nearest neighbours);
5. keep matches whose part labels agree (paper; off in the reference code);
6. vote: Score(c) = matched prototype parts of class c / all matched parts;
7. show the matched keypoints (part centroids) with their labels.

Where the paper and the reference code differ, both are options (``k``, ``label_agreement``,
``prototype_selection``); see ``docs/klc.md``.
"""

from __future__ import annotations

import sys
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.base import ViTBackbone
from xaikit.errors import CapabilityError, XaikitError
from xaikit.features.extract import extract_features
from xaikit.interfaces import Backbone, Capability, Dataset, Explainer, Matcher, Segmenter
from xaikit.paths import cache_dir
from xaikit.types import Explanation, Features, PartMap, Sample
from xaikit.validation import choice_option
from xaikit_klc.gallery import SELECTIONS, GalleryParts, PrototypeIndex, cache_path, load_parts, part_rows, sample_key, save_parts
from xaikit_klc.parts import PREPROCESSINGS, part_grids, pool_parts
from xaikit_klc.retrieval import build_index
from xaikit_klc.voting import soft_vote

__all__ = ["KLC", "PartSet"]


@dataclass(frozen=True)
class PartSet:
    """Described parts of one or more images.

    Attributes:
        descriptor: ``(L, D)`` float32.
        label: label id in the owning image's part map, ``(L,)`` ``int64``.
        name: part name per row.
        centroid: ``(x, y)`` in the owning image's pixels, ``(L, 2)`` float32.
        owner: which image owns each row (a retrieval rank for candidates), ``(L,)`` ``int64``.
    """

    descriptor: torch.Tensor
    label: torch.Tensor
    name: tuple[str, ...]
    centroid: torch.Tensor
    owner: torch.Tensor

    def select(self, rows: torch.Tensor, owner: torch.Tensor | None = None) -> PartSet:
        """The given rows, optionally with new owners."""
        return PartSet(
            descriptor=self.descriptor[rows],
            label=self.label[rows],
            name=tuple(self.name[int(row)] for row in rows),
            centroid=self.centroid[rows],
            owner=self.owner[rows] if owner is None else owner,
        )

    def owned_by(self, owner: int) -> PartSet:
        """The rows of one owner, re-owned by 0."""
        rows = torch.nonzero(self.owner == owner).flatten()
        return self.select(rows, owner=torch.zeros_like(rows))

    def of(self, owner: int) -> list[dict[str, Any]]:
        """JSON rows (label, name, keypoint) of one owner's parts, in row order."""
        rows = torch.nonzero(self.owner == owner).flatten().tolist()
        return [
            {"label": int(self.label[row]), "name": self.name[row], "keypoint": [round(float(v), 2) for v in self.centroid[row]]}
            for row in rows
        ]


def describe(
    maps: Sequence[PartMap], patches: torch.Tensor, preprocessing, grid: tuple[int, int], resizing: str = "xaikit"
) -> tuple[PartSet, torch.Tensor]:
    """Part descriptors and centroids of a batch of images.

    Args:
        maps: one part map per image, in image pixels.
        patches: ``(B, h, w, D)`` patch tokens of the same images.
        preprocessing: the backbone's :class:`~xaikit.backbones.Preprocess` (aligns maps with tokens).
        grid: ``(G_h, G_w)`` token grid.
        resizing: one of :data:`~xaikit_klc.parts.PREPROCESSINGS`: how maps and tokens are resized.

    Returns:
        A :class:`PartSet` whose ``owner`` is the image index, and the label grids ``(B, G_h, G_w)``.
        Parts that vanish on the token grid are dropped.
    """
    notebook = resizing == "notebook"
    grids = part_grids(list(maps), preprocessing, grid, "nearest" if notebook else "nearest-exact")
    pooled = pool_parts(patches, grids, "mirror" if notebook else "clamp")
    centroids = torch.zeros(len(pooled.label), 2)
    names: list[str] = []
    for index, part_map in enumerate(maps):  # one iteration per image
        rows = pooled.of(index)
        centroids[rows] = part_map.centroids(pooled.label[rows]).cpu()
        names.extend(part_map.names.get(int(label), f"label {int(label)}") for label in pooled.label[rows])
    parts = PartSet(descriptor=pooled.descriptor, label=pooled.label, name=tuple(names), centroid=centroids, owner=pooled.image)
    return parts, grids


def _notebook_backbone(backbone: ViTBackbone) -> ViTBackbone:
    """A shallow copy of ``backbone`` (same model) that squashes images with PIL's bilinear filter, as the notebook's ``Resize((224, 224))``.

    The copy's feature-cache namespace differs from the original's (it holds the preprocessing), so
    cached features and gallery parts of the two never mix.

    Raises:
        XaikitError: the backbone resizes and crops instead of squashing.
    """
    if backbone.preprocessing.mode != "squash":
        raise XaikitError(
            "KLC's preprocessing=notebook reproduces the notebook's squash to the model input; build the backbone with resize=squash"
        )
    notebook = copy.copy(backbone)
    notebook.preprocessing = backbone.preprocessing.replace(interpolation="pil-bilinear")
    return notebook


class KLC(Explainer):
    """Keypoint Labeling Classifier: retrieve prototypes, match labelled parts, vote.

    Args:
        backbone: a registered backbone name or a built one (KLC's reference: DINOv2-B, squashed to 224).
        segmenter: a registered segmenter name or a built one; a name whose factory takes a
            ``backbone`` (``dino-parts``) shares this backbone.
        matcher: a registered matcher name or a built one (``mnn``: best buddies, as in the paper).
        k: prototypes retrieved per query by CLS cosine similarity; the paper reports 3, the
            reference code used 5.
        prototypes_per_class: prototypes kept per class from the training set (reference: 5, i.e.
            1000 for CUB); ``None`` keeps every training image.
        prototype_selection: ``"kmeans"`` (per-class k-means on CLS, the image nearest each centroid;
            the reference's inferred method) or ``"first"`` (dataset order).
        label_agreement: keep only matches whose part labels agree (the paper; the reference code
            keeps every mutual match).
        token_grid: side of the grid the patch tokens and part maps are resized to before pooling
            (reference: 64); ``None`` pools on the backbone's own patch grid.
        preprocessing: ``xaikit`` (default: the backbone's own image resize, nearest-exact label
            maps, border-clamped bilinear token upsampling) or ``notebook``, the reference
            notebook's three resizing steps exactly: PIL bilinear squash of the image
            (torchvision ``Resize((224, 224))``), OpenCV ``INTER_NEAREST`` (floor) for the part maps,
            and ``skimage.transform.resize``'s mirrored-border bilinear for the tokens; it needs a
            squashing backbone.
        layer: describe parts with the patch tokens of this block (raw block output; negative
            counts from the last block) instead of the final, normalised tokens (the reference).
        seed: k-means seed for prototype selection.
        device: device of a backbone built from its name.
        batch_size: images per backbone forward pass.
        cache: cache features (and, for segmenters with a fingerprint, prototype parts) on disk.
        progress: show progress bars while fitting (feature extraction of the training split); ``None``
            (the default): when standard error is a terminal. Never recorded in a run's configuration.
    """

    concept_mode: ClassVar[str] = "class-agnostic"  # one concept per part name of the segmenter's vocabulary, shared by every class

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        segmenter: str | Segmenter = "annotations",
        matcher: str | Matcher = "mnn",
        *,
        k: int = 3,
        prototypes_per_class: int | None = 5,
        prototype_selection: str = "kmeans",
        label_agreement: bool = True,
        token_grid: int | None = 64,
        preprocessing: str = "xaikit",
        layer: int | None = None,
        seed: int = 0,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        progress: bool | None = None,
    ) -> None:
        from xaikit import get_registry

        if int(k) < 1:
            raise XaikitError(f"k must be at least 1, got {k}")
        if token_grid is not None and int(token_grid) < 1:
            raise XaikitError(f"token_grid must be a positive grid side or null, got {token_grid}")
        choice_option("prototype selection", prototype_selection, SELECTIONS)
        self.preprocessing_choice = choice_option("preprocessing", preprocessing, PREPROCESSINGS)
        registry = get_registry()
        self.backbone = registry.build("backbone", backbone, device=device, **({} if layer is None else {"layers": [layer]}))
        if not isinstance(self.backbone, ViTBackbone):
            raise XaikitError(f"KLC needs a ViT backbone with patch tokens, got {type(self.backbone).__name__}")
        if self.preprocessing_choice == "notebook":
            self.backbone = _notebook_backbone(self.backbone)
        self.layer = None if layer is None else self.backbone._block_index(int(layer))
        if self.layer is not None and self.layer not in self.backbone.layers:
            raise XaikitError(f"KLC describes parts with block {layer}, which the backbone was not built to return; build it with layers=[{layer}]")
        self.segmenter: Segmenter = registry.build("segmenter", segmenter, offer={"backbone": self.backbone, "device": device})
        self.matcher: Matcher = registry.build("matcher", matcher)
        self.k = int(k)
        self.prototypes_per_class = None if prototypes_per_class is None else int(prototypes_per_class)
        self.prototype_selection = prototype_selection
        self.label_agreement = bool(label_agreement)
        self.token_grid = None if token_grid is None else int(token_grid)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.cache = bool(cache)
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        pixel_concepts = not (self.segmenter.joint or self.segmenter.needs_annotations)
        self.capabilities = frozenset({Capability.PREDICTIONS} | ({Capability.CONCEPT_MAPS} if pixel_concepts else set()))
        self.classes: tuple[str, ...] = ()
        self.index: PrototypeIndex | None = None
        self.parts: GalleryParts | None = None
        self._train: Dataset | None = None
        self._prototype_patches: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"KLC(backbone={self.backbone.name!r}, segmenter={type(self.segmenter).__name__}, "
            f"matcher={self.matcher!r}, k={self.k}, label_agreement={self.label_agreement})"
        )

    # ------------------------------------------------------------------------------------ fit
    def fit(self, dataset: Dataset) -> KLC:
        """Build the gallery from ``dataset`` (the training split): prototypes, features, parts."""
        self.classes = tuple(dataset.classes)
        self._train = dataset
        self.index, samples, features = build_index(
            self.backbone, dataset, per_class=self.prototypes_per_class, selection=self.prototype_selection,
            seed=self.seed, batch_size=self.batch_size, cache=self.cache, progress=self.progress,
        )
        if self.segmenter.joint:  # parts only exist per query (co-segmentation of query + prototypes)
            self._prototype_patches = self._tokens(features).half()
            self.parts = None
        else:
            self.parts = self._gallery_parts(samples, self._tokens(features))
        return self

    def _tokens(self, features: Features) -> torch.Tensor:
        """The ``(B, h, w, D)`` tokens parts are described with: final patches, or block :attr:`layer`."""
        return features.patches if self.layer is None else features.layers[self.layer]

    def _grid(self, patches: torch.Tensor) -> tuple[int, int]:
        return (self.token_grid, self.token_grid) if self.token_grid else (patches.shape[1], patches.shape[2])

    def _gallery_parts(self, samples: list[Sample], patches: torch.Tensor) -> GalleryParts:
        """Describe every prototype's parts once, reading them from the disk cache when possible."""
        path = None
        if self.cache and self.segmenter.fingerprint is not None:
            spec = {
                "backbone": self.backbone.cache_namespace, "segmenter": self.segmenter.fingerprint,
                "grid": list(self._grid(patches)), "resizing": self.preprocessing_choice,
                "samples": [sample_key(sample) for sample in samples],
            }
            path = cache_path(cache_dir(), spec)
            cached = load_parts(path)
            if cached is not None:
                return cached
        chunks = []
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            parts, _ = describe(self.segmenter.segment(batch), patches[start : start + len(batch)], self.backbone.preprocessing, self._grid(patches), self.preprocessing_choice)
            chunks.append((parts, start))
        gallery = GalleryParts(
            owner=torch.cat([parts.owner + start for parts, start in chunks]),
            label=torch.cat([parts.label for parts, _ in chunks]),
            name=tuple(name for parts, _ in chunks for name in parts.name),
            descriptor=torch.cat([parts.descriptor for parts, _ in chunks]),
            centroid=torch.cat([parts.centroid for parts, _ in chunks]),
        )
        if path is not None:
            save_parts(path, gallery)
        return gallery

    # -------------------------------------------------------------------------------- explain
    def _fitted(self) -> PrototypeIndex:
        if self.index is None:
            raise XaikitError("KLC is not fitted: call fit(train_dataset) first")
        return self.index

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Classify ``samples`` by matched parts; details hold prototypes, parts, matches and keypoints."""
        index = self._fitted()
        samples = list(samples)
        features = extract_features(self.backbone, samples, batch_size=self.batch_size, cache=self.cache)
        similarity, retrieved = index.retrieve(features.cls, self.k)
        tokens = self._tokens(features)
        grid = self._grid(tokens)
        concept_maps = None
        if self.segmenter.joint:
            pairs = [self._joint_parts(samples[b], tokens[b], retrieved[b]) for b in range(len(samples))]
        else:
            maps = self.segmenter.segment(samples)
            query, grids = describe(maps, tokens, self.backbone.preprocessing, grid, self.preprocessing_choice)
            concept_maps = self._one_hot(maps, grids)
            pairs = [(query.owned_by(b), self._candidates(retrieved[b])) for b in range(len(samples))]
        decisions = [self._decide(query, candidates, retrieved[b], similarity[b]) for b, (query, candidates) in enumerate(pairs)]
        for sample, (_, _, detail) in zip(samples, decisions, strict=True):
            detail["label"] = int(sample.label)
        return Explanation(
            predictions=torch.tensor([prediction for _, prediction, _ in decisions], dtype=torch.int64),
            scores=torch.stack([scores for scores, _, _ in decisions]),
            concept_maps=concept_maps,
            concept_names=None if concept_maps is None else tuple(self.segmenter.vocabulary),
            details=[detail for _, _, detail in decisions],
        )

    def _candidates(self, prototypes: torch.Tensor) -> PartSet:
        """The cached parts of the retrieved prototypes, owner = retrieval rank."""
        assert self.parts is not None
        rows, rank = part_rows(self.parts.owner, prototypes)
        gallery = PartSet(
            descriptor=self.parts.descriptor, label=self.parts.label, name=self.parts.name,
            centroid=self.parts.centroid, owner=self.parts.owner,
        )
        return gallery.select(rows, owner=rank)

    def _joint_parts(self, sample: Sample, patches: torch.Tensor, prototypes: torch.Tensor) -> tuple[PartSet, PartSet]:
        """Co-segment the query with its prototypes in one call; owner 0 = query, r + 1 = rank r."""
        assert self._train is not None and self._prototype_patches is not None and self.index is not None
        images = [sample] + [self._train[int(self.index.dataset_index[row])] for row in prototypes]
        maps = self.segmenter.segment(images)
        stacked = torch.cat([patches[None], self._prototype_patches[prototypes].float()])
        parts, _ = describe(maps, stacked, self.backbone.preprocessing, self._grid(stacked), self.preprocessing_choice)
        query_rows = parts.owner == 0
        return (
            parts.select(torch.nonzero(query_rows).flatten()),
            parts.select(torch.nonzero(~query_rows).flatten(), owner=parts.owner[~query_rows] - 1),
        )

    def _decide(self, query: PartSet, candidates: PartSet, prototypes: torch.Tensor, similarity: torch.Tensor) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Match, filter by label, vote; returns scores ``(C,)``, the prediction and the JSON detail."""
        assert self.index is not None
        match = self.matcher.match(query.descriptor, candidates.descriptor)
        vocabulary = {name: number for number, name in enumerate(sorted(set(query.name) | set(candidates.name)))}
        query_names = torch.tensor([vocabulary[name] for name in query.name], dtype=torch.int64)
        candidate_names = torch.tensor([vocabulary[name] for name in candidates.name], dtype=torch.int64)
        agree = query_names[match.query] == candidate_names[match.candidate]
        keep = agree if self.label_agreement else torch.ones_like(agree)
        ranks = candidates.owner[match.candidate[keep]]
        classes = self.index.labels[prototypes]
        scores, prediction, fallback = soft_vote(classes[ranks], len(self.classes), int(classes[0]))
        # candidates are grouped by rank: a row's position within its prototype's list of parts
        local = match.candidate - torch.searchsorted(candidates.owner.contiguous(), candidates.owner[match.candidate])
        detail = {
            "prediction": prediction,
            "fallback": fallback,
            "prototypes": [
                {
                    "gallery_index": int(row), "dataset_index": int(self.index.dataset_index[row]),
                    "image_id": int(self.index.image_ids[row]), "label": int(self.index.labels[row]),
                    "similarity": round(float(value), 6),
                }
                for row, value in zip(prototypes, similarity, strict=True)
            ],
            "query_parts": query.of(0),
            "prototype_parts": [candidates.of(rank) for rank in range(len(prototypes))],
            "matches": [
                {
                    "query_part": int(q), "prototype": int(candidates.owner[c]), "prototype_part": int(position),
                    "part": query.name[int(q)], "prototype_part_name": candidates.name[int(c)], "similarity": round(float(s), 6),
                }
                for q, c, position, s in zip(match.query[keep], match.candidate[keep], local[keep], match.similarity[keep], strict=True)
            ],
            "rejected_matches": int((~agree).sum()) if self.label_agreement else 0,
        }
        return scores, prediction, detail

    # --------------------------------------------------------------------------- concepts
    @property
    def concept_names(self) -> Sequence[str] | None:
        """The segmenter's vocabulary, one concept per part name (``None`` for anonymous joint parts)."""
        return tuple(self.segmenter.vocabulary) if Capability.CONCEPT_MAPS in self.capabilities else None

    def _one_hot(self, maps: Sequence[PartMap], grids: torch.Tensor) -> torch.Tensor:
        """``(B, K, G_h, G_w)`` float masks, channel ``k`` = vocabulary entry ``k``."""
        position = {name: number for number, name in enumerate(self.segmenter.vocabulary)}
        masks = torch.zeros(len(maps), len(position), *grids.shape[1:])
        for image, part_map in enumerate(maps):  # one iteration per image
            lookup = torch.full((int(grids[image].max()) + 1,), len(position), dtype=torch.int64)
            for label, name in part_map.names.items():
                if label < len(lookup) and name in position:
                    lookup[label] = position[name]
            concept = lookup[grids[image]]
            masks[image] = F.one_hot(concept, len(position) + 1)[..., : len(position)].permute(2, 0, 1).float()
        return masks

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Part masks of the segmenter's vocabulary on the token grid, ``(B, K, G, G)``.

        Raises:
            CapabilityError: with a joint segmenter, whose part ids mean nothing across calls, or
                one that reads annotations and so cannot segment bare pixels.
        """
        if self.segmenter.joint:
            raise CapabilityError(f"KLC with the joint segmenter {type(self.segmenter).__name__} has no fixed concepts")
        if self.segmenter.needs_annotations:
            raise CapabilityError(
                f"KLC with {type(self.segmenter).__name__} has no concept maps for bare images: that segmenter reads "
                "dataset annotations; use a segmenter that works on pixels (clipseg, vlpart, ...)"
            )
        pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        samples = [Sample(image=np.ascontiguousarray(image)) for image in pixels]
        maps = self.segmenter.segment(samples)
        grid = (self.token_grid, self.token_grid) if self.token_grid else self.backbone.grid(self.backbone.preprocess(images[:1]))
        nearest = "nearest" if self.preprocessing_choice == "notebook" else "nearest-exact"
        return self._one_hot(maps, part_grids(maps, self.backbone.preprocessing, grid, nearest))

    # ------------------------------------------------------------------------------ figure
    def prototype_samples(self, detail: Mapping[str, Any]) -> list[Sample]:
        """The decoded prototype images of one explanation, in rank order."""
        if self._train is None:
            raise XaikitError("KLC is not fitted: call fit(train_dataset) first")
        return [self._train[int(entry["dataset_index"])] for entry in detail["prototypes"]]

    def render(self, sample: Sample, detail: Mapping[str, Any]) -> np.ndarray:
        """The paper's Figure 2: query and prototypes side by side, matched keypoints joined and labelled."""
        from xaikit_klc.figure import draw_explanation

        prototypes = self.prototype_samples(detail)
        maps = self.segmenter.segment([sample, *prototypes])
        return draw_explanation(
            sample.image, [prototype.image for prototype in prototypes], detail,
            query_labels=maps[0].labels, prototype_labels=[part_map.labels for part_map in maps[1:]],
            class_names=self.classes,
        ).image
