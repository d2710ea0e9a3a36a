"""KLC's prototype gallery: which training images serve as prototypes, and their cached part descriptors.

The reference code retrieves among 1000 fixed prototypes (5 per CUB class) whose selection code was
never published; per-class k-means on CLS features, keeping the image nearest to each centroid (as
in the group's KMEx work), is the best-supported reading and xaikit's default. ``first`` keeps the
first images of each class in dataset order instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

from xaikit.cluster import kmeans
from xaikit.errors import XaikitError
from xaikit.features.cache import FeatureCache, tensor_checksum
from xaikit.io import write_bytes_atomically
from xaikit.types import Sample
from xaikit.validation import choice_option

__all__ = ["SELECTIONS", "GalleryParts", "cache_path", "load_parts", "part_rows", "sample_key", "save_parts", "select_prototypes"]

SELECTIONS = ("kmeans", "first")
_FORMAT = "2"
_log = logging.getLogger(__name__)


def select_prototypes(
    labels: np.ndarray, per_class: int | None, method: str, cls: torch.Tensor | None = None, seed: int = 0
) -> np.ndarray:
    """Indices of the prototype images, grouped by class (ascending), ``(P,)`` ``int64``.

    Args:
        labels: class of every candidate image, ``(N,)``.
        per_class: prototypes per class (a class with fewer images keeps them all); ``None`` keeps
            every image.
        method: ``"first"`` (dataset order) or ``"kmeans"`` (per-class k-means on L2-normalised
            ``cls``; for each centroid the nearest image not already chosen).
        cls: ``(N, D)`` CLS features, needed by ``"kmeans"``.
        seed: k-means seed.
    """
    choice_option("prototype selection", method, SELECTIONS)
    if per_class is not None and per_class < 1:
        raise XaikitError(f"prototypes_per_class must be at least 1, got {per_class}")
    labels = np.asarray(labels, np.int64)
    order = np.argsort(labels, kind="stable")
    if per_class is None:
        return order
    if method == "first":
        starts = np.searchsorted(labels[order], labels[order], side="left")
        rank = np.arange(len(order)) - starts
        return order[rank < per_class]
    groups = _groups(labels)
    if all(len(members) <= per_class for members in groups):
        return order
    if cls is None:
        raise ValueError("kmeans prototype selection needs the CLS features of every image")
    points = F.normalize(cls.float(), dim=1)
    chosen = [_nearest_to_centroids(members, points[members], per_class, seed) for members in groups]
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each class present, in ascending class order."""
    return [np.flatnonzero(labels == value) for value in np.unique(labels)]


def _nearest_to_centroids(members: np.ndarray, points: torch.Tensor, per_class: int, seed: int) -> np.ndarray:
    """For each of ``min(per_class, n)`` k-means centroids, the nearest member not yet taken (in centroid order)."""
    if len(members) <= per_class:
        return members
    centroids = kmeans(points, per_class, seed=seed).centroids
    distance = torch.cdist(centroids, points)  # (k, n)
    taken: list[int] = []
    for row in distance:  # k <= per_class rows: a loop over centroids, not over points
        ranked = torch.argsort(row, stable=True).tolist()
        taken.append(next(index for index in ranked if index not in taken))
    return members[np.sort(np.array(taken))]


def sample_key(sample: Sample) -> str:
    """Content hash of a sample's pixels and annotations: what a segmenter may look at."""
    digest = hashlib.sha256(FeatureCache.image_key(sample.image).encode())
    for array in (sample.keypoints, sample.visible, sample.bbox, sample.part_mask, sample.foreground):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes() + str(array.shape).encode())
    digest.update(json.dumps(list(sample.part_names)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class GalleryParts:
    """Part descriptors of every prototype, flattened.

    Attributes:
        owner: prototype row (index into the gallery) of each part, ``(L,)`` ``int64``.
        label: label id in its part map, ``(L,)`` ``int64``.
        name: part name, one per row.
        descriptor: ``(L, D)`` float32.
        centroid: ``(x, y)`` in the prototype image's pixels, ``(L, 2)`` float32.
    """

    owner: torch.Tensor
    label: torch.Tensor
    name: tuple[str, ...]
    descriptor: torch.Tensor
    centroid: torch.Tensor


def cache_path(root: Path, spec: dict) -> Path:
    """``<root>/klc-gallery/<hash of spec>.safetensors``."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:40]
    return root / "klc-gallery" / f"{key}.safetensors"


def save_parts(path: Path, parts: GalleryParts) -> None:
    """Write ``parts`` as one safetensors file, atomically, with a checksum of every tensor and name."""
    tensors = {"owner": parts.owner, "label": parts.label, "descriptor": parts.descriptor.float(), "centroid": parts.centroid.float()}
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    names = json.dumps(parts.name)
    metadata = {"format": _FORMAT, "names": names, "checksum": tensor_checksum(tensors, names.encode())}
    data = safetensors.torch.save(tensors, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)


def load_parts(path: Path) -> GalleryParts | None:
    """The parts stored at ``path``, or ``None`` when absent, unreadable or failing its checksum (then recomputed)."""
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open has no iterator
        if metadata.get("format") != _FORMAT or metadata.get("checksum") != tensor_checksum(tensors, metadata["names"].encode()):
            raise ValueError("format or checksum mismatch")
        names = tuple(json.loads(metadata["names"]))
        if len(names) != len(tensors["owner"]):
            raise ValueError("length mismatch")
        return GalleryParts(name=names, **{key: tensors[key] for key in ("owner", "label", "descriptor", "centroid")})
    except Exception as error:  # noqa: BLE001 - any unreadable entry is a cache miss, recomputed and rewritten
        _log.debug("ignoring unreadable KLC gallery cache %s: %s", path, error)
        return None


def part_rows(owner: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The part rows owned by the retrieved ``prototypes``, grouped by retrieval rank.

    Args:
        owner: prototype row of every gallery part, ``(L,)``.
        prototypes: retrieved prototype rows in rank order, ``(k,)``.

    Returns:
        ``rows`` ``(L_k,)`` into the parts and the ``rank`` ``(L_k,)`` of each row's prototype,
        ordered by rank, then by row.
    """
    owned = owner.unsqueeze(1) == prototypes.unsqueeze(0)  # (L, k)
    rows = torch.nonzero(owned.any(dim=1)).flatten()
    rank = owned[rows].float().argmax(dim=1)
    order = torch.argsort(rank, stable=True)
    return rows[order], rank[order]


@dataclass(frozen=True)
class PrototypeIndex:
    """The prototype images and their CLS features, for retrieval by cosine similarity.

    Attributes:
        dataset_index: index of each prototype in the dataset it was fitted on, ``(P,)`` ``int64``.
        labels: class of each prototype, ``(P,)`` ``int64``.
        image_ids: dataset image id of each prototype, ``(P,)`` ``int64``.
        cls: L2-normalised CLS features, ``(P, D)`` float32.
    """

    dataset_index: torch.Tensor
    labels: torch.Tensor
    image_ids: torch.Tensor
    cls: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def retrieve(self, cls: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar prototypes of each query by CLS cosine similarity.

        Args:
            cls: query CLS features ``(B, D)``.
            k: prototypes to retrieve (at most ``P``).

        Returns:
            ``similarity`` ``(B, k)`` descending and the prototype rows ``(B, k)``.
        """
        similarity = F.normalize(cls.float(), dim=1) @ self.cls.T  # (B, P)
        return similarity.topk(min(k, len(self)), dim=1)
