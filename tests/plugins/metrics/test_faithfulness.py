"""Faithfulness: deletion and insertion against random removal, captum's infidelity and max-sensitivity, on toy explainers."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import xaikit
from xaikit.errors import CapabilityError, UnknownOptionError, XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit_metrics.faithfulness import (
    CURVES,
    Faithfulness,
    baseline_images,
    curve_auc,
    evidence_maps,
    evidence_ranks,
    gaussian_blur,
    step_images,
)

SIZE = 32  # images are 32 x 32; region R, the top-left 8 x 8 square, is 1/16 of them


# ---------------------------------------------------------------- building blocks


def test_curve_auc_by_hand():
    curves = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.8]])
    assert curve_auc(curves).tolist() == pytest.approx([0.5, 1.0, 0.5, 0.35])
    assert curve_auc(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])).item() == pytest.approx(0.125)


def test_evidence_is_the_maximum_of_the_upsampled_maps():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 0, 0, 0], maps[0, 1, 1, 1], maps[0, 2] = 1.0, 2.0, 5.0
    evidence = evidence_maps(maps, (4, 4), concepts=[0, 1])
    assert evidence.shape == (1, 4, 4)
    assert evidence[0, 0, 0] == 1.0 and evidence[0, 3, 3] == 2.0 and evidence[0, 1, 1] == pytest.approx(0.5625)
    assert evidence_maps(maps, (4, 4)).eq(5.0).all()  # channel 2 dominates everywhere


def test_ranks_follow_evidence_and_break_ties_by_the_keys():
    evidence = torch.tensor([[[3.0, 1.0], [3.0, 2.0]]])
    assert evidence_ranks(evidence, torch.tensor([[0.9, 0.1, 0.2, 0.3]])).tolist() == [[1, 3, 0, 2]]
    assert evidence_ranks(evidence, torch.tensor([[0.1, 0.9, 0.2, 0.3]])).tolist() == [[0, 3, 1, 2]]


def test_step_images_swap_exactly_the_first_pixels():
    images, black, grey = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    deletion, insertion = step_images(images, black, grey, torch.tensor([[2, 0, 3, 1]]), count=2)
    assert deletion[0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]] and insertion[0, 0].tolist() == [[0.5, 1.0], [0.5, 1.0]]


def test_baselines():
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(baseline_images(images, "black", 0.1), torch.zeros_like(images))
    mean = baseline_images(images, "mean", 0.1)
    assert torch.allclose(mean[:, :, 5, 7], images.mean(dim=(2, 3)))
    blurred = baseline_images(images, "blur", 0.1)  # sigma 2 pixels
    assert blurred.std() < images.std() / 2 and torch.allclose(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.02)
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 3.0), flat)


# ---------------------------------------------------------------- toy explainers


class ListDataset(Dataset):
    classes = ("region", "other")
    part_names = ()

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], np.int64)

    def split(self, name: str) -> Dataset:
        return self


def region_images(count: int = 6, seed: int = 0) -> ListDataset:
    """Dark noise in [0, 0.4] with region R white."""
    rng = np.random.default_rng(seed)
    samples = []
    for n in range(count):
        image = (rng.random((SIZE, SIZE, 3)) * 0.4 * 255).astype(np.uint8)
        image[:8, :8] = 255
        samples.append(Sample(image=image, label=0, image_id=100 + n))
    return ListDataset(samples)


def cell_map(row: int, col: int) -> torch.Tensor:
    """One concept on a 4 x 4 grid (cells of 8 x 8 pixels), 1 on one cell."""
    maps = torch.zeros(1, 4, 4)
    maps[0, row, col] = 1.0
    return maps


def ramp_away_from_region() -> torch.Tensor:
    """One concept on a 4 x 4 grid that grows with the distance from region R."""
    cells = torch.arange(4.0)
    return (cells.view(4, 1) + cells.view(1, 4))[None]


class RegionClassifier(Explainer):
    """Class 0's logit is 20 x (mean of region R - 0.5), class 1's is 0: only R decides. Not differentiable."""

    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS})

    def __init__(self, maps: torch.Tensor) -> None:
        self.maps = maps
        self.explained = 0

    def fit(self, dataset: Dataset) -> RegionClassifier:
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        region = images[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([20 * (region - 0.5), torch.zeros_like(region)], dim=1)

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        self.explained += len(samples)
        images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
        scores = self.logits(images)
        return Explanation(predictions=scores.argmax(dim=1), scores=scores)

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(len(images), -1, -1, -1)


class DifferentiableRegionClassifier(RegionClassifier):
    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS, Capability.DIFFERENTIABLE})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)


def run(explainer: Explainer, **options) -> dict:
    options = {"image_size": SIZE, "device": "cpu", "perturb_samples": 0, "deletion_baseline": "black", "insertion_baseline": "black", **options}
    return Faithfulness(**options)(explainer, region_images()).details


# ---------------------------------------------------------------- deletion and insertion


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_a_faithful_explainer_beats_random_removal_and_an_unfaithful_one_does_not(baseline: str):
    faithful = run(DifferentiableRegionClassifier(cell_map(0, 0)), deletion_baseline=baseline, insertion_baseline=baseline)
    assert faithful["deletion_auc"] < 0.1 < 0.3 < faithful["random_deletion_auc"]
    assert faithful["insertion_auc"] > 0.9 > 0.7 > faithful["random_insertion_auc"]
    assert faithful["deletion_gap"] > 0.25 and faithful["insertion_gap"] > 0.25
    elsewhere = run(DifferentiableRegionClassifier(cell_map(3, 3)), deletion_baseline=baseline, insertion_baseline=baseline)  # R ties with most pixels at 0
    assert elsewhere["deletion_gap"] < 0.05 and elsewhere["insertion_gap"] < 0.05
    assert elsewhere["random_deletion_auc"] == faithful["random_deletion_auc"]  # the same random orders
    away = run(DifferentiableRegionClassifier(ramp_away_from_region()), deletion_baseline=baseline, insertion_baseline=baseline)  # R comes last
    assert away["deletion_auc"] > 0.85 and away["insertion_auc"] < 0.15
    assert away["deletion_gap"] < -0.3 and away["insertion_gap"] < -0.3


def test_rise_defaults_black_deletion_and_an_insertion_that_starts_blurred():
    explainer = DifferentiableRegionClassifier(cell_map(0, 0))
    details = Faithfulness(image_size=SIZE, device="cpu", perturb_samples=0)(explainer, region_images()).details
    assert details["deletion_gap"] > 0.25 and details["curves"]["deletion"][-1] < 0.01  # all black
    # A blur of 1.6 pixels leaves R bright: the class survives it, so insertion says nothing here.
    assert details["curves"]["insertion"][0] > 0.99 and abs(details["insertion_gap"]) < 0.01
    assert (details["options"]["deletion_baseline"], details["options"]["insertion_baseline"]) == ("black", "blur")


def test_result_layout_and_curves():
    explainer = DifferentiableRegionClassifier(cell_map(0, 0))
    result = Faithfulness(image_size=SIZE, device="cpu", perturb_samples=0, insertion_baseline="black", steps=8)(explainer, region_images())
    assert result.name == "faithfulness" and result.higher_is_better
    details = result.details
    assert result.value == details["deletion_gap"] == details["random_deletion_auc"] - details["deletion_auc"]
    assert details["fractions"] == [t / 8 for t in range(9)] and details["images"] == 6
    curves = details["curves"]
    assert set(curves) == set(CURVES) and all(len(curve) == 9 for curve in curves.values())
    assert curves["deletion"][0] == curves["random_deletion"][0] == curves["insertion"][-1] > 0.99  # the clean image
    assert curves["deletion"][-1] == curves["insertion"][0] < 0.01  # all black
    assert curves["deletion"][1] < 0.01 and curves["insertion"][1] > 0.99  # R is the first eighth's first half
    first = details["per_image"][0]
    assert (first["index"], first["image_id"], first["label"], first["predicted"]) == (0, 100, 0, 0)
    assert np.mean([image["deletion_auc"] for image in details["per_image"]]) == pytest.approx(details["deletion_auc"])
    gaps = [image["random_deletion_auc"] - image["deletion_auc"] for image in details["per_image"]]
    assert result.unit_values == pytest.approx(gaps) and np.mean(result.unit_values) == pytest.approx(result.value, abs=1e-9)  # one unit per image
    assert details["scores_from"] == "forward" and details["infidelity"] is None
    assert details["captum_skipped"] == "infidelity and sensitivity_max were turned off with perturb_samples=0"
    assert json.loads(json.dumps(details)) == details


def test_without_a_forward_the_scores_come_from_explain_and_captum_is_skipped():
    forward = run(DifferentiableRegionClassifier(cell_map(0, 0)))
    explainer = RegionClassifier(cell_map(0, 0))
    explained = run(explainer, perturb_samples=10)
    assert explained["scores_from"] == "explain" and explainer.explained == 6 * (3 + 4 * 15)  # clean, both baselines, 4 curves x 15 inner steps
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert explained[key] == pytest.approx(forward[key], abs=1e-6)
    assert explained["infidelity"] is None and explained["sensitivity_max"] is None
    assert explained["captum_skipped"] == "infidelity and sensitivity_max need a differentiable explainer, and RegionClassifier is not"


def test_seeded_runs_repeat_and_the_seed_moves_only_the_random_curves():
    explainer = DifferentiableRegionClassifier(cell_map(0, 0))
    first, again, other = run(explainer, seed=1), run(explainer, seed=1, batch_size=4), run(explainer, seed=2)
    assert first == {**again, "options": first["options"]}  # batch size does not matter
    assert other["random_deletion_auc"] != first["random_deletion_auc"]
    assert other["deletion_auc"] == pytest.approx(first["deletion_auc"], abs=0.02)  # only plateau ties move


def test_raw_scores_and_the_concepts_option():
    two = torch.cat([cell_map(3, 3), cell_map(0, 0)])  # channel 0 elsewhere, channel 1 on R
    explainer = DifferentiableRegionClassifier(two)
    raw = run(explainer, score="raw", concepts=[1])
    assert raw["curves"]["deletion"][0] > 9 and raw["curves"]["deletion"][-1] < -9  # logits 20 (1 - 0.5) and -10
    assert run(explainer, concepts=[0])["deletion_gap"] < 0 < run(explainer, concepts=[1])["deletion_gap"]


# ---------------------------------------------------------------- captum


class LinearExplainer(Explainer):
    """Class 0's score is sum over channels and pixels of weight x pixel, class 1's is 0; its concept map is a weight map."""

    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS, Capability.DIFFERENTIABLE})

    def __init__(self, weights: torch.Tensor, explained: torch.Tensor | None = None) -> None:
        self.weights, self.explained = weights, weights if explained is None else explained

    def fit(self, dataset: Dataset) -> LinearExplainer:
        return self

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        raise AssertionError("a differentiable explainer is scored through forward")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = (images * self.weights).sum(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.explained.expand(len(images), 1, -1, -1)


def test_captum_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model():
    weights = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) + 0.1
    exact = run(LinearExplainer(weights), score="raw", perturb_samples=8, steps=4)
    assert exact["captum_skipped"] is None
    assert exact["infidelity"] == pytest.approx(0.0, abs=1e-7) and exact["sensitivity_max"] == 0.0  # float32 rounding
    scaled = run(LinearExplainer(weights, explained=weights * 7), score="raw", perturb_samples=8, steps=4)
    assert scaled["infidelity"] == pytest.approx(0.0, abs=1e-7)  # normalised: the scale of a map does not matter
    wrong = run(LinearExplainer(weights, explained=weights.flip(2, 3)), score="raw", perturb_samples=8, steps=4)
    assert wrong["infidelity"] > 1e-3 and wrong["sensitivity_max"] == 0.0


def test_captum_sensitivity_grows_with_maps_that_follow_the_input():
    class Following(LinearExplainer):
        def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=1, keepdim=True)

    weights = torch.ones(1, 1, SIZE, SIZE)
    small = run(Following(weights), perturb_samples=6, steps=2, sensitivity_radius=0.01)
    large = run(Following(weights), perturb_samples=6, steps=2, sensitivity_radius=0.1)
    assert 0 < small["sensitivity_max"] < large["sensitivity_max"]
    assert small["infidelity"] >= 0


# ---------------------------------------------------------------- unhappy paths and the registry


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 1}, "steps must be an integer of at least 2"),
        ({"deletion_baseline": "noise"}, "unknown deletion_baseline 'noise'"),
        ({"insertion_baseline": "zero"}, "unknown insertion_baseline 'zero'"),
        ({"score": "logit"}, "unknown score 'logit'"),
        ({"resize": "crop"}, "unknown resize 'crop'"),
        ({"concepts": []}, "non-empty list"),
        ({"concepts": [-1]}, "concepts must be an integer of at least 0"),
        ({"perturb_samples": -1}, "perturb_samples must be an integer of at least 0"),
        ({"blur_sigma": 0}, "blur_sigma must be a number"),
        ({"image_size": 1}, "image_size must be an integer of at least 2"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str):
    with pytest.raises(XaikitError, match=message) as error:
        Faithfulness(**options)
    assert "\n" not in str(error.value)


def test_explainers_it_cannot_score_are_refused():
    with pytest.raises(XaikitError, match="names channel 4, but the explainer gives 1 concept maps"):
        run(DifferentiableRegionClassifier(cell_map(0, 0)), concepts=[4])

    class Plain(RegionClassifier):
        capabilities = frozenset({Capability.PREDICTIONS})

    with pytest.raises(CapabilityError, match="metric 'faithfulness' needs concept-maps"):
        Faithfulness()(Plain(cell_map(0, 0)), region_images())
    with pytest.raises(XaikitError, match="empty dataset"):
        Faithfulness(device="cpu")(RegionClassifier(cell_map(0, 0)), ListDataset([]))


def test_created_through_the_registry():
    metric = xaikit.create("metric", "faithfulness", steps=8, deletion_baseline="mean")
    assert isinstance(metric, Faithfulness) and (metric.steps, metric.deletion_baseline, metric.insertion_baseline) == (8, "mean", "blur")
    assert metric.requires == frozenset({Capability.CONCEPT_MAPS})
    with pytest.raises(UnknownOptionError, match="has no option 'step'"):
        xaikit.create("metric", "faithfulness", step=8)


def test_images_are_perturbed_at_the_explainers_own_input_side_unless_told():
    from xaikit.backbones.preprocess import Preprocess
    from xaikit.testing import TinyDataset, ToyExplainer

    class SidedToy(ToyExplainer):
        @property
        def preprocessing(self):
            return Preprocess(size=(48, 48), mode="squash")

    dataset = TinyDataset(per_class=3)
    explainer = SidedToy().fit(dataset.split("train"))
    test = dataset.split("test")
    options = {"steps": 2, "perturb_samples": 0, "device": "cpu"}
    assert xaikit.create("metric", "faithfulness", **options)(explainer, test).details["image_size"] == 48
    assert xaikit.create("metric", "faithfulness", image_size=32, **options)(explainer, test).details["image_size"] == 32
    assert xaikit.create("metric", "faithfulness", **options)(ToyExplainer().fit(dataset.split("train")), test).details["image_size"] == 224
