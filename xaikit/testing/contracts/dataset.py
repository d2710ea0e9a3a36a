"""The contract every :class:`~xaikit.Dataset` meets."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from xaikit.errors import XaikitError
from xaikit.interfaces import Dataset
from xaikit.testing.contracts._base import ComponentContract
from xaikit.types import Sample

SPLITS = ("train", "test", "all")


class DatasetContract(ComponentContract):
    """Subclass as ``TestMyDataset(DatasetContract)`` and implement :meth:`make_dataset`.

    Point it at a small copy of the data (written by the test, or shipped as test data); the suite
    decodes only the first and last few samples.

    Attributes:
        checked: how many samples from each end of the dataset the suite decodes.
    """

    kind: ClassVar[str] = "dataset"
    checked: ClassVar[int] = 3

    def make_dataset(self) -> Dataset:
        """Build the dataset under test (with all its samples, i.e. the ``"all"`` split)."""
        raise NotImplementedError("implement make_dataset() in your DatasetContract subclass")

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls) -> Dataset:
        return cls().make_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def positions(cls, dataset: Dataset) -> list[int]:
        """The indices the suite decodes: the first and last ``checked`` samples."""
        return sorted(set(range(min(cls.checked, len(dataset)))) | set(range(max(0, len(dataset) - cls.checked), len(dataset))))

    def test_is_a_non_empty_dataset_with_names(self, dataset: Dataset) -> None:
        assert isinstance(dataset, Dataset) and len(dataset) > 0
        assert len(dataset.classes) > 0 and all(isinstance(name, str) for name in dataset.classes)
        assert all(isinstance(name, str) for name in dataset.part_names)

    def test_labels_index_the_classes(self, dataset: Dataset) -> None:
        labels = dataset.labels
        assert isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (len(dataset),)
        assert labels.min() >= -1 and labels.max() < len(dataset.classes), "labels must be class indices (or -1 for unknown)"

    def test_samples_agree_with_the_dataset(self, dataset: Dataset, positions: list[int]) -> None:
        for index in positions:
            sample = dataset[index]
            assert isinstance(sample, Sample)
            assert sample.label == dataset.labels[index], f"sample {index} has label {sample.label}, labels says {dataset.labels[index]}"
            assert tuple(sample.part_names) == tuple(dataset.part_names), "keypoint rows must follow the dataset's part_names"

    def test_decoding_is_deterministic(self, dataset: Dataset) -> None:
        first, second = dataset[0], dataset[0]
        assert np.array_equal(first.image, second.image) and first.image_id == second.image_id
        assert np.array_equal(first.keypoints, second.keypoints)

    def test_iteration_starts_with_the_first_sample(self, dataset: Dataset) -> None:
        assert np.array_equal(next(iter(dataset)).image, dataset[0].image)

    def test_an_index_past_the_end_raises_index_error(self, dataset: Dataset) -> None:
        with pytest.raises(IndexError):
            dataset[len(dataset)]

    def test_splits_are_datasets_that_partition_the_whole(self, dataset: Dataset) -> None:
        parts = {name: dataset.split(name) for name in SPLITS}
        for name, part in parts.items():
            assert isinstance(part, Dataset), f"split('{name}') is a {type(part).__name__}"
            assert tuple(part.classes) == tuple(dataset.classes) and tuple(part.part_names) == tuple(dataset.part_names)
        assert len(parts["train"]) + len(parts["test"]) == len(parts["all"]), "train and test must partition all"
        if len(parts["train"]):
            assert parts["train"][0].is_train in (True, None)
        if len(parts["test"]):
            assert parts["test"][0].is_train in (False, None)

    def test_an_unknown_split_is_refused(self, dataset: Dataset) -> None:
        with pytest.raises(XaikitError):
            dataset.split("no-such-split")
