"""The test kit's own data and toy components pass the contract suites they are meant to serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaikit.errors import DatasetError, XaikitError
from xaikit.interfaces import Capability
from xaikit.testing import (
    TINY_PARTS,
    DatasetContract,
    ExplainerContract,
    SegmenterContract,
    TinyDataset,
    ToyExplainer,
    ToySegmenter,
    image_batch,
    tiny_samples,
)


class TestTinyDataset(DatasetContract):
    def make_dataset(self):
        return TinyDataset(classes=3, per_class=3)


class TestToySegmenter(SegmenterContract):
    def make_segmenter(self):
        return ToySegmenter()


class TestToyExplainer(ExplainerContract):
    def make_explainer(self):
        return ToyExplainer()


class TestPredictionsOnlyToyExplainer(ExplainerContract):
    def make_explainer(self):
        return ToyExplainer(capabilities={Capability.PREDICTIONS})


def test_tiny_samples_are_annotated_and_reproducible():
    first, second = tiny_samples(2, (40, 56), classes=2), tiny_samples(2, (40, 56), classes=2)
    for sample, again in zip(first, second, strict=True):
        assert sample.size == (40, 56) and np.array_equal(sample.image, again.image)
        assert sample.part_names == TINY_PARTS and sample.visible.all()
        assert set(np.unique(sample.part_mask)) == {0, 1, 2, 3} and np.array_equal(sample.foreground, sample.part_mask > 0)
        for part, (x, y) in enumerate(sample.keypoints, start=1):  # each keypoint lies on its own part
            assert sample.part_mask[int(y), int(x)] == part
        x, y, w, h = sample.bbox.astype(int)
        assert sample.part_mask[y : y + h, x : x + w].any() and sample.part_mask.sum() == sample.part_mask[y : y + h, x : x + w].sum()
    assert [s.label for s in tiny_samples(5, classes=3)] == [0, 1, 2, 0, 1]
    assert not np.array_equal(tiny_samples(1, seed=1)[0].image, first[0].image)
    with pytest.raises(ValueError, match="at least 16"):
        tiny_samples(1, 8)


def test_tiny_dataset_splits_each_class_in_half():
    dataset = TinyDataset(classes=2, per_class=5)
    assert len(dataset) == 10 and dataset.labels.tolist() == [0] * 5 + [1] * 5
    train, test = dataset.split("train"), dataset.split("test")
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and test.labels.tolist() == [0, 0, 1, 1]
    assert all(sample.is_train for sample in train) and not any(sample.is_train for sample in test)
    assert len(test.split("all")) == 10
    with pytest.raises(DatasetError, match="at least 1 class and 2 images"):
        TinyDataset(per_class=1)


def test_image_batch_resizes_to_unit_floats():
    batch = image_batch(tiny_samples(2, (40, 56)), size=32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32 and 0 <= batch.min() and batch.max() <= 1
    assert image_batch([], size=8).shape == (0, 3, 8, 8)


def test_toy_explainer_separates_the_tiny_classes():
    dataset = TinyDataset(classes=3, per_class=6)
    explanation = ToyExplainer().fit(dataset.split("train")).explain(list(dataset.split("test")))
    assert explanation.predictions.tolist() == dataset.split("test").labels.tolist()
    assert explanation.concept_maps.shape == (9, 3, 4, 4)
    with pytest.raises(XaikitError, match="not fitted"):
        ToyExplainer().explain(tiny_samples(1))


def test_toy_segmenter_splits_rows_in_half():
    (part_map,) = ToySegmenter().segment(tiny_samples(1, (17, 20)))
    assert part_map.labels[:9].eq(1).all() and part_map.labels[9:].eq(2).all()
