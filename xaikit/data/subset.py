"""A dataset view of selected samples of another dataset, in a given order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xaikit.errors import XaikitError
from xaikit.interfaces import Dataset
from xaikit.types import Sample

__all__ = ["Subset"]


class Subset(Dataset):
    """Samples ``indices`` of ``dataset``, in that order (e.g. the reference's random 1000 test images).

    Args:
        dataset: the dataset to select from.
        indices: positions in ``dataset``; repeats are allowed.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and not (0 <= self.indices.min() and self.indices.max() < len(dataset)):
            raise IndexError(f"subset indices must lie in 0..{len(dataset) - 1}")
        self.classes = dataset.classes
        self.part_names = dataset.part_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, images={len(self)})"

    @property
    def labels(self) -> np.ndarray:
        """Class index of every selected sample, ``(N,)`` ``int64``."""
        return np.asarray(self.dataset.labels, np.int64)[self.indices]

    def split(self, name: str) -> Subset:
        """Only ``"all"`` (this subset itself): split the underlying dataset before selecting from it."""
        if name != "all":
            raise XaikitError(f"a subset cannot be split into '{name}'; split the dataset before selecting images")
        return self
