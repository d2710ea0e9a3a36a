"""Accuracy: top-k with ties to the lower class id, through score() and through evaluate()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaikit
from xaikit.errors import XaikitError
from xaikit.interfaces import Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit_metrics.accuracy import Accuracy, top_k_correct


def test_top_k_hand_worked():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 0, 1, 0])
    assert top_k_correct(labels, scores, 1).tolist() == [True, True, False, False]  # ties: class 0 wins
    assert top_k_correct(labels, scores, 2).tolist() == [True, True, True, False]
    assert top_k_correct(labels, scores, 3).tolist() == [True, True, True, True]


def test_score_reports_top1_and_top5():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 10, generator=generator)
    labels = torch.randint(0, 10, (50,), generator=generator)
    result = Accuracy().score(labels, scores)
    top1 = 100 * (scores.argmax(dim=1) == labels).double().mean().item()
    top5 = 100 * (scores.topk(5, dim=1).indices == labels[:, None]).any(dim=1).double().mean().item()
    assert result.value == pytest.approx(top1) and result.details["top1"] == pytest.approx(top1)
    assert result.details["top5"] == pytest.approx(top5) and result.details["images"] == 50
    assert result.name == "accuracy" and result.higher_is_better


class Constant(Explainer):
    """Predicts class 1 for everything."""

    def fit(self, dataset):
        return self

    def explain(self, samples):
        scores = torch.tensor([[0.0, 1.0, 0.5]]).repeat(len(samples), 1)
        return Explanation(predictions=scores.argmax(dim=1), scores=scores)


class Labelled(Dataset):
    classes = ("a", "b", "c")
    part_names = ()

    def __init__(self, labels):
        self._labels = np.array(labels)

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, index):
        return Sample(image=np.zeros((2, 2, 3), np.uint8), label=int(self._labels[index]))

    @property
    def labels(self):
        return self._labels

    def split(self, name):
        return self


def test_evaluate_explains_the_dataset_in_batches():
    result = xaikit.create("metric", "accuracy")(Constant(), Labelled([1, 1, 0, 2, 1]))
    assert result.value == pytest.approx(60.0) and result.details["top5"] == 100.0


def test_bad_top_k_and_empty_input():
    with pytest.raises(XaikitError, match="at least 1"):
        Accuracy(top=[0])
    with pytest.raises(XaikitError, match="at least one"):
        Accuracy().score(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3))
