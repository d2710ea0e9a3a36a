"""The contract every :class:`~xaikit.Explainer` meets, capability honesty included."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from xaikit.errors import CapabilityError
from xaikit.interfaces import Capability, Dataset, Explainer
from xaikit.testing.contracts._base import ComponentContract, assert_json
from xaikit.testing.fixtures import TinyDataset, image_batch
from xaikit.types import Explanation, Sample


class ExplainerContract(ComponentContract):
    """Subclass as ``TestMyExplainer(ExplainerContract)`` and implement :meth:`make_explainer`.

    The suite fits the explainer once on :meth:`make_train_dataset` (default: the training split of
    a :class:`~xaikit.testing.TinyDataset`, 2 classes x 2 images) and explains
    :meth:`make_samples` (default: its 4 test images). Every capability the explainer claims is
    exercised; every one it does not claim must raise :class:`~xaikit.CapabilityError`.

    Attributes:
        image_size: side of the ``(B, 3, S, S)`` images given to ``concept_maps`` and ``forward``.
    """

    kind: ClassVar[str] = "explainer"
    image_size: ClassVar[int] = 64

    def make_explainer(self) -> Explainer:
        """Build the (unfitted) explainer under test."""
        raise NotImplementedError("implement make_explainer() in your ExplainerContract subclass")

    def make_train_dataset(self) -> Dataset:
        """The dataset the explainer is fitted on."""
        return TinyDataset().split("train")

    def make_samples(self) -> list[Sample]:
        """The samples the explainer explains."""
        return list(TinyDataset().split("test"))

    @pytest.fixture(scope="class")
    @classmethod
    def train(cls) -> Dataset:
        return cls().make_train_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls) -> list[Sample]:
        return cls().make_samples()

    @pytest.fixture(scope="class")
    @classmethod
    def fit_result(cls, train: Dataset) -> tuple[Explainer, object]:
        """The explainer and what its ``fit`` returned."""
        explainer = cls().make_explainer()
        return explainer, explainer.fit(train)

    @pytest.fixture(scope="class")
    @classmethod
    def explainer(cls, fit_result: tuple[Explainer, object]) -> Explainer:
        return fit_result[0]

    @pytest.fixture(scope="class")
    @classmethod
    def explanation(cls, explainer: Explainer, samples: list[Sample]) -> Explanation:
        return explainer.explain(samples)

    @pytest.fixture(scope="class")
    @classmethod
    def images(cls, samples: list[Sample]) -> torch.Tensor:
        return image_batch(samples, cls.image_size)

    def test_is_an_explainer_that_predicts(self, explainer: Explainer) -> None:
        assert isinstance(explainer, Explainer)
        assert all(isinstance(capability, Capability) for capability in explainer.capabilities)
        assert Capability.PREDICTIONS in explainer.capabilities

    def test_fit_returns_the_explainer(self, fit_result: tuple[Explainer, object]) -> None:
        explainer, returned = fit_result
        assert returned is explainer, "fit() must return self"

    def test_one_prediction_and_score_row_per_sample(self, explanation: Explanation, samples: list[Sample], train: Dataset) -> None:
        assert isinstance(explanation, Explanation) and len(explanation) == len(samples)
        assert explanation.predictions.dtype == torch.int64
        assert tuple(explanation.scores.shape) == (len(samples), len(train.classes)), "scores must be (B, C) over the training classes"
        assert explanation.scores.is_floating_point() and bool(torch.isfinite(explanation.scores).all())

    def test_the_prediction_is_a_top_scoring_class(self, explanation: Explanation, train: Dataset) -> None:
        predictions = explanation.predictions.cpu()
        assert bool(((predictions >= 0) & (predictions < len(train.classes))).all())
        scores = explanation.scores.detach().cpu().float()
        assert torch.equal(scores.gather(1, predictions[:, None])[:, 0], scores.max(dim=1).values), "the predicted class must score highest"

    def test_details_are_one_json_dict_per_sample(self, explanation: Explanation, samples: list[Sample]) -> None:
        assert len(explanation.details) == len(samples) and all(isinstance(detail, dict) for detail in explanation.details)
        assert_json(explanation.details, "Explanation.details")

    def test_explaining_is_deterministic(self, explainer: Explainer, samples: list[Sample], explanation: Explanation) -> None:
        again = explainer.explain(samples)
        assert torch.equal(again.predictions, explanation.predictions)
        torch.testing.assert_close(again.scores, explanation.scores)

    def test_concept_maps_in_the_explanation_match_their_names(self, explanation: Explanation) -> None:
        if explanation.concept_maps is None:
            pytest.skip("this explanation carries no concept maps")
        assert explanation.concept_maps.is_floating_point()
        if explanation.concept_names is not None:
            assert len(explanation.concept_names) == explanation.concept_maps.shape[1]

    def test_concept_maps_exactly_when_claimed(self, explainer: Explainer, images: torch.Tensor) -> None:
        if Capability.CONCEPT_MAPS not in explainer.capabilities:
            with pytest.raises(CapabilityError):
                explainer.concept_maps(images)
            return
        with torch.no_grad():
            maps = explainer.concept_maps(images)
        assert isinstance(maps, torch.Tensor) and maps.ndim == 4 and maps.shape[0] == len(images), f"concept maps {tuple(maps.shape)}"
        assert maps.is_floating_point() and bool(torch.isfinite(maps).all())
        names = explainer.concept_names
        assert names is not None and len(names) == maps.shape[1], "claiming concept maps means naming each of the K concepts"

    def test_concept_maps_are_deterministic_and_in_batch_order(self, explainer: Explainer, images: torch.Tensor) -> None:
        if Capability.CONCEPT_MAPS not in explainer.capabilities:
            pytest.skip("the explainer has no concept maps")
        with torch.no_grad():
            maps, again, reversed_maps = explainer.concept_maps(images), explainer.concept_maps(images), explainer.concept_maps(images.flip(0))
        torch.testing.assert_close(again, maps, msg="concept maps must not change between calls")
        torch.testing.assert_close(reversed_maps, maps.flip(0), rtol=1e-4, atol=1e-5, msg="concept maps must follow the batch order")

    def test_forward_exactly_when_claimed_differentiable(self, explainer: Explainer, images: torch.Tensor, train: Dataset) -> None:
        if Capability.DIFFERENTIABLE not in explainer.capabilities:
            with pytest.raises(CapabilityError):
                explainer.forward(images)
            return
        pixels = images.clone().requires_grad_(True)
        scores = explainer.forward(pixels)
        assert tuple(scores.shape) == (len(images), len(train.classes)), f"forward gave {tuple(scores.shape)}"
        scores.sum().backward()
        assert pixels.grad is not None and bool(torch.isfinite(pixels.grad).all()) and bool(pixels.grad.abs().sum() > 0)

    def test_render_draws_an_rgb_figure_or_raises_capability_error(self, explainer: Explainer, samples: list[Sample], explanation: Explanation) -> None:
        try:
            figure = explainer.render(samples[0], explanation.details[0])
        except CapabilityError:
            return
        assert isinstance(figure, np.ndarray) and figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3
