"""Bootstrap intervals of prediction metrics: seeded, vectorised where the metric is a mean, equal to the plain loop."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.bench.uncertainty import bootstrap_interval
from xaikit.errors import XaikitError
from xaikit.interfaces import PredictionMetric
from xaikit.types import MetricResult


class LoopedAccuracy(PredictionMetric):
    """Top-1 accuracy without ``per_image``: the bootstrap must score every resample."""

    name = "looped-accuracy"

    def score(self, labels: torch.Tensor, scores: torch.Tensor) -> MetricResult:
        return MetricResult(self.name, 100.0 * (scores.argmax(dim=1) == labels).double().mean().item(), True)


def predictions(n: int = 300, classes: int = 7, right: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, classes, (n,), generator=generator)
    scores = torch.randn(n, classes, generator=generator)
    scores[torch.arange(right), labels[:right]] += 100.0  # the first `right` images are surely right
    return labels, scores


def test_the_vectorised_interval_equals_one_score_per_resample():
    labels, scores = predictions()
    fast = bootstrap_interval(xaikit.create("metric", "accuracy"), labels, scores, resamples=400, seed=3)
    slow = bootstrap_interval(LoopedAccuracy(), labels, scores, resamples=400, seed=3)
    assert fast["low"] == pytest.approx(slow["low"], abs=1e-9) and fast["high"] == pytest.approx(slow["high"], abs=1e-9)


def test_the_interval_is_seeded_brackets_the_value_and_narrows_with_more_images():
    metric = xaikit.create("metric", "accuracy")
    labels, scores = predictions()
    value = metric.score(labels, scores).value
    first, again = (bootstrap_interval(metric, labels, scores, resamples=500, seed=31) for _ in range(2))
    assert first == again and first["low"] < value < first["high"] and first["level"] == 0.95
    assert bootstrap_interval(metric, labels, scores, resamples=500, seed=32) != first
    big_labels, big_scores = predictions(n=3000, right=2000)
    narrow = bootstrap_interval(metric, big_labels, big_scores, resamples=500, seed=31)
    assert narrow["high"] - narrow["low"] < (first["high"] - first["low"]) / 2  # about 1 / sqrt(10) as wide


def test_all_right_gives_a_point_interval():
    labels, scores = predictions(n=50, right=50)
    interval = bootstrap_interval(xaikit.create("metric", "accuracy"), labels, scores, resamples=200, seed=0)
    assert interval["low"] == interval["high"] == 100.0


def test_a_metric_that_cannot_score_a_resample_gets_no_interval_and_a_reason():
    class NeedsEveryClass(LoopedAccuracy):
        def score(self, labels, scores):
            if len(labels.unique()) < scores.shape[1]:
                raise XaikitError("needs every class in the sample")
            return super().score(labels, scores)

    labels, scores = predictions(n=8, classes=7, right=8)
    interval = bootstrap_interval(NeedsEveryClass(), labels, scores, resamples=50, seed=0)
    assert interval["low"] is None and interval["high"] is None and "every class" in interval["reason"]
