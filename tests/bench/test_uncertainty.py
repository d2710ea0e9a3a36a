"""Bootstrap intervals: seeded, vectorised where the metric is a mean, equal to the plain loop; over images or over units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaikit
from xaikit.bench.uncertainty import OVER_UNITS, bootstrap_interval, mean_interval, resampled_rows
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


def test_units_0_100_100_0_have_the_mean_50_inside_a_seeded_interval_over_units():
    units = (0.0, 100.0, 100.0, 0.0)
    interval = mean_interval(units, resamples=1000, seed=31, method=OVER_UNITS)
    assert interval["method"] == "percentile bootstrap over units" and (interval["resamples"], interval["seed"]) == (1000, 31)
    assert interval["low"] < 50.0 < interval["high"] and np.mean(units) == 50.0
    assert {interval["low"], interval["high"]} <= {0.0, 25.0, 50.0, 75.0, 100.0}  # a mean of 4 units
    assert mean_interval(list(units), resamples=1000, seed=31, method=OVER_UNITS) == interval  # seeded


def test_rows_are_torchs_randint_stream_so_recorded_intervals_are_reproduced():
    for count, seed in ((200, 31), (7, 0), (5794, -3)):
        expected = torch.randint(0, count, (20, count), generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.array_equal(resampled_rows(count, 20, seed), expected)
