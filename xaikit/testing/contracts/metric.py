"""The contract every :class:`~xaikit.Metric` meets."""

from __future__ import annotations

import math
import re
from typing import ClassVar

import numpy as np
import pytest
import torch

from xaikit.boundary import unit_values_problem
from xaikit.errors import CapabilityError
from xaikit.interfaces import Capability, Dataset, Explainer, Metric, PredictionMetric
from xaikit.testing.contracts._base import ComponentContract, assert_json
from xaikit.testing.fixtures import TinyDataset
from xaikit.testing.toys import ToyExplainer
from xaikit.types import MetricResult

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


class MetricContract(ComponentContract):
    """Subclass as ``TestMyMetric(MetricContract)`` and implement :meth:`make_metric`.

    The suite scores :meth:`make_explainer` (default: a :class:`~xaikit.testing.ToyExplainer` with
    every capability, fitted on the training split) on :meth:`make_dataset` (default: the test split
    of a :class:`~xaikit.testing.TinyDataset`, annotated with boxes, keypoints and part masks), and
    checks that the metric refuses explainers that lack what it requires. A metric that draws
    random numbers must be seeded in :meth:`make_metric`: the suite expects the same score twice.
    """

    kind: ClassVar[str] = "metric"

    def make_metric(self) -> Metric:
        """Build the metric under test."""
        raise NotImplementedError("implement make_metric() in your MetricContract subclass")

    def make_dataset(self) -> Dataset:
        """The dataset the metric scores on (a test split; its ``split("train")`` is the training data)."""
        return TinyDataset(per_class=6).split("test")

    def make_explainer(self, train: Dataset) -> Explainer:
        """A fitted explainer with exactly the capabilities the metric declares (``requires``), fitted on ``train``.

        Nothing more is offered, so a metric that uses a capability it does not declare (calls
        ``concept_maps`` without requiring ``CONCEPT_MAPS``) fails here, not in a user's run.
        """
        return ToyExplainer(capabilities={Capability.PREDICTIONS, *self.make_metric().requires}).fit(train)

    @pytest.fixture(scope="class")
    @classmethod
    def metric(cls) -> Metric:
        return cls().make_metric()

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls) -> Dataset:
        return cls().make_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def explainer(cls, dataset: Dataset) -> Explainer:
        return cls().make_explainer(dataset.split("train"))

    @pytest.fixture(scope="class")
    @classmethod
    def result(cls, metric: Metric, explainer: Explainer, dataset: Dataset) -> MetricResult:
        return metric.evaluate(explainer, dataset)

    def test_declares_name_direction_and_requirements(self, metric: Metric) -> None:
        assert isinstance(metric, Metric)
        assert isinstance(metric.name, str) and _NAME.match(metric.name), f"metric name {metric.name!r} is not a registrable name"
        assert isinstance(metric.higher_is_better, bool)
        assert all(isinstance(capability, Capability) for capability in metric.requires)

    def test_accepts_an_explainer_with_what_it_requires(self, metric: Metric, explainer: Explainer) -> None:
        missing = set(metric.requires) - set(explainer.capabilities)
        assert not missing, f"make_explainer() must give an explainer with {sorted(c.value for c in missing)}"
        metric.check(explainer)

    def test_refuses_an_explainer_lacking_a_requirement(self, metric: Metric, dataset: Dataset) -> None:
        required = set(metric.requires) - {Capability.PREDICTIONS}
        if not required:
            metric.check(ToyExplainer(capabilities={Capability.PREDICTIONS}))
            return
        for capability in required:
            lacking = ToyExplainer(capabilities=set(Capability) - {capability})
            with pytest.raises(CapabilityError) as refusal:
                metric(lacking, dataset)
            message = str(refusal.value)
            assert metric.name in message and capability.value in message, f"the refusal must name the metric and the capability: {message}"

    def test_evaluate_returns_a_finite_result_under_its_name(self, metric: Metric, result: MetricResult) -> None:
        assert isinstance(result, MetricResult)
        assert result.name == metric.name and result.higher_is_better == metric.higher_is_better
        assert isinstance(result.value, float | int) and not isinstance(result.value, bool) and math.isfinite(result.value)
        assert_json(dict(result.details), "MetricResult.details")

    def test_unit_values_are_none_or_average_to_the_value(self, result: MetricResult) -> None:
        problem = unit_values_problem(result.unit_values, result.value)
        assert not problem, f"MetricResult.unit_values: the metric {problem}"

    def test_evaluating_is_deterministic(self, metric: Metric, explainer: Explainer, dataset: Dataset, result: MetricResult) -> None:
        assert metric.evaluate(explainer, dataset).value == result.value

    def test_calling_the_metric_checks_then_evaluates(self, metric: Metric, explainer: Explainer, dataset: Dataset, result: MetricResult) -> None:
        assert metric(explainer, dataset).value == result.value

    def test_a_prediction_metric_scores_the_explained_scores(self, metric: Metric, explainer: Explainer, dataset: Dataset, result: MetricResult) -> None:
        if not isinstance(metric, PredictionMetric):
            pytest.skip("not a PredictionMetric")
        scores = explainer.explain(list(dataset)).scores.float().cpu()
        labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
        scored = metric.score(labels, scores)
        assert isinstance(scored, MetricResult) and scored.name == metric.name
        assert scored.value == pytest.approx(result.value)
