"""Interfaces: default behaviour of the abstract classes and the capability contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaikit.errors import CapabilityError
from xaikit.interfaces import Backbone, Capability, Dataset, Explainer, Metric
from xaikit.types import Explanation, Features, MetricResult, Sample


class MeanColour(Backbone):
    """A 'backbone' whose features are patch-mean colours; enough to test the call pipeline."""

    embed_dim, patch_size = 3, 2

    def preprocess(self, images):
        return torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images])

    def features(self, pixels):
        patches = torch.nn.functional.avg_pool2d(pixels, self.patch_size).permute(0, 2, 3, 1)
        return Features(cls=patches.mean(dim=(1, 2)), patches=patches)


class Predictor(Explainer):
    def fit(self, dataset):
        return self

    def explain(self, samples):
        return Explanation(torch.zeros(len(samples), dtype=torch.int64), torch.ones(len(samples), 2))


class NeedsMaps(Metric):
    name = "needs-maps"
    requires = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS})

    def evaluate(self, explainer, dataset):
        return MetricResult(self.name, 1.0, True)


class Tiny(Dataset):
    classes, part_names = ("a",), ()

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return Sample(np.full((4, 4, 3), index, np.uint8), label=0, image_id=index)

    @property
    def labels(self):
        return np.zeros(2, np.int64)

    def split(self, name):
        return self


def test_backbone_call_preprocesses_then_extracts():
    features = MeanColour()([np.zeros((4, 6, 3), np.uint8), np.full((4, 6, 3), 255, np.uint8)])
    assert features.patches.shape == (2, 2, 3, 3) and features.grid == (2, 3)
    torch.testing.assert_close(features.cls, torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_dataset_iterates_its_samples():
    assert [s.image_id for s in Tiny()] == [0, 1]


def test_explainer_defaults_refuse_concept_maps_and_gradients():
    explainer = Predictor()
    assert explainer.capabilities == {Capability.PREDICTIONS} and explainer.concept_names is None
    with pytest.raises(CapabilityError, match="Predictor does not provide concept maps"):
        explainer.concept_maps(torch.zeros(1, 3, 4, 4))
    with pytest.raises(CapabilityError, match="Predictor is not differentiable"):
        explainer.forward(torch.zeros(1, 3, 4, 4))


def test_metric_refuses_an_explainer_without_required_capabilities():
    with pytest.raises(CapabilityError, match="metric 'needs-maps' needs concept-maps from the explainer, which Predictor does not provide"):
        NeedsMaps()(Predictor(), Tiny())

    class Mapper(Predictor):
        capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS})

    assert NeedsMaps()(Mapper(), Tiny()).value == 1.0
