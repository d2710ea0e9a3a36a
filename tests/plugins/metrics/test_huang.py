"""Consistency and stability (Huang et al., ICCV 2023): hand-worked cases, the plain-loop oracle, evaluate end to end."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import xaikit
from xaikit.backbones.preprocess import IMAGENET_STD, Preprocess
from xaikit.boundary import unit_values_problem
from xaikit.errors import CapabilityError, UnknownOptionError, XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit_metrics.huang import (
    Consistency,
    Frame,
    Stability,
    class_prototypes,
    consistency_from_hits,
    explainer_frame,
    keypoints_to_grid,
    part_hits,
    peak_boxes,
    peak_positions,
    prepare_batch,
    stability_from_hits,
)

_spec = importlib.util.spec_from_file_location("huang_oracle", Path(__file__).with_name("huang_oracle.py"))
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)

GRID, HALF = 224, 36


# ---------------------------------------------------------------- helpers


def peak_maps(peaks: Sequence[Sequence[tuple[int, int]]], grid: int = GRID) -> torch.Tensor:
    """``(N, K, grid, grid)`` maps, zero except 1 at the given ``(row, col)`` of each image and concept."""
    maps = torch.zeros(len(peaks), len(peaks[0]), grid, grid)
    for n, row in enumerate(peaks):
        for k, (r, c) in enumerate(row):
            maps[n, k, r, c] = 1.0
    return maps


def blob_maps(centres: torch.Tensor, size: int = 7) -> torch.Tensor:
    """``(..., size, size)`` Gaussian blobs centred at off-grid ``centres`` ``(..., 2)`` (row, col) in cells."""
    cells = torch.arange(size, dtype=torch.float32)
    dy = cells.view(size, 1) - centres[..., 0, None, None]
    dx = cells.view(1, size) - centres[..., 1, None, None]
    return torch.exp(-(dy**2 + dx**2) / 2)


class ListDataset(Dataset):
    """A dataset over samples held in memory."""

    def __init__(self, samples: list[Sample], classes: Sequence[str], part_names: Sequence[str]) -> None:
        self.samples, self.classes, self.part_names = samples, list(classes), list(part_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def split(self, name: str) -> Dataset:
        return self


class MapsExplainer(Explainer):
    """Concept maps computed by a function of the input images; records every batch it receives."""

    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS})

    def __init__(self, maps: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.maps, self.received = maps, []

    def fit(self, dataset: Dataset) -> MapsExplainer:
        return self

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        return Explanation(predictions=torch.zeros(len(samples), dtype=torch.int64), scores=torch.zeros(len(samples), 1))

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        self.received.append(images.clone())
        return self.maps(images)


class PlainExplainer(MapsExplainer):
    capabilities = frozenset({Capability.PREDICTIONS})


class Backbone:
    """Stands in for a ViT backbone: only its preprocessing is read."""

    def __init__(self, preprocessing: Preprocess) -> None:
        self.preprocessing = preprocessing


class SizedExplainer(MapsExplainer):
    """A :class:`MapsExplainer` whose model reads ``preprocessing`` input, like IVPT at 518 pixels."""

    def __init__(self, maps: Callable[[torch.Tensor], torch.Tensor], preprocessing: Preprocess) -> None:
        super().__init__(maps)
        self.backbone = Backbone(preprocessing)


# ---------------------------------------------------------------- hand-worked fixture
#
# Five images (classes 0, 0, 0, 1, 1), parts A, B, C; keypoints (x, y) already on the 224 grid.
# Class-specific: 2 prototypes per class, channel p belongs to class p // 2.

PARTS = ["A", "B", "C"]
LABELS = torch.tensor([0, 0, 0, 1, 1])
KEYPOINTS = torch.tensor([
    [[100, 100], [10, 10], [0, 0]],
    [[100, 100], [200, 200], [0, 0]],
    [[0, 0], [10, 10], [0, 0]],
    [[50, 50], [150, 150], [150, 187]],
    [[50, 50], [0, 0], [20, 20]],
])
VISIBLE = torch.tensor([
    [True, True, False],
    [True, True, False],
    [False, True, False],
    [True, True, True],
    [True, False, True],
])
ELSEWHERE = (223, 0)  # peaks of other classes' prototypes: scoring them would change every result
SPECIFIC_PEAKS = [
    [(100, 100), (10, 10), ELSEWHERE, ELSEWHERE],
    [(100, 100), (10, 10), ELSEWHERE, ELSEWHERE],
    [(100, 100), (10, 10), ELSEWHERE, ELSEWHERE],
    [ELSEWHERE, ELSEWHERE, (14, 50), (150, 150)],
    [ELSEWHERE, ELSEWHERE, (14, 50), (150, 150)],
]
SPECIFIC_UNITS = (torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))  # (class, slot) of channels 0..3


def specific_hits(peaks: list = SPECIFIC_PEAKS) -> torch.Tensor:
    maps = class_prototypes(peak_maps(peaks), LABELS, 2)
    return part_hits(peak_boxes(maps, GRID, HALF), KEYPOINTS, VISIBLE)


def test_peak_boxes_clip_at_the_border_and_take_the_first_maximum():
    maps = peak_maps([[(100, 50), (5, 220), (223, 0)]])
    assert peak_boxes(maps, GRID, HALF)[0].tolist() == [[64, 136, 14, 86], [0, 41, 184, 224], [187, 224, 0, 36]]
    tie = torch.zeros(1, 1, GRID, GRID)
    tie[0, 0, 50, 3] = tie[0, 0, 5, 100] = tie[0, 0, 5, 120] = 1.0
    assert peak_positions(tie, GRID)[0, 0].tolist() == [5, 100]


def test_part_hits_bounds_are_inclusive():
    boxes = peak_boxes(peak_maps([[(100, 100)]]), GRID, HALF)  # rows and columns 64..136
    keypoints = torch.tensor([[[100, 136], [100, 137], [64, 100], [63, 100], [136, 136], [100, 64]]])
    hits = part_hits(boxes, keypoints, torch.ones(1, 6, dtype=torch.bool))
    assert hits[0, 0].tolist() == [True, False, True, False, True, True]
    assert not part_hits(boxes, keypoints, torch.zeros(1, 6, dtype=torch.bool)).any()


def test_class_specific_consistency_by_hand():
    hits = specific_hits()
    assert hits[:3, 0].tolist() == [[True, False, False], [True, False, False], [False, False, False]]
    assert hits[3:, 0].tolist() == [[True, False, False], [True, False, True]]  # A at y = 50 = 14 + 36 is hit
    assert hits[3, 1].tolist() == [False, True, False]  # C at y = 187 = 150 + 37 is not
    scores = consistency_from_hits(hits, VISIBLE, LABELS, *SPECIFIC_UNITS, mu=0.8)
    expected = [
        [1.0, 0.0, 0.0],  # A hit in both class-0 images where A is visible (not 2 of 3 images)
        [0.0, 2 / 3, 0.0],  # C never visible in class 0: denominator 1, ratio 0
        [1.0, 0.0, 0.5],
        [0.0, 1.0, 0.0],  # B visible in one class-1 image only
    ]
    assert torch.allclose(scores.ratios, torch.tensor(expected, dtype=torch.float64))
    assert scores.consistent.tolist() == [True, False, True, True]
    assert scores.score == pytest.approx(75.0)
    assert consistency_from_hits(hits, VISIBLE, LABELS, *SPECIFIC_UNITS, mu=0.6).score == pytest.approx(100.0)


def test_class_agnostic_consistency_by_hand():
    maps = peak_maps([[(100, 100), (14, 50)]] * 5)  # the same two concepts in every class
    hits = part_hits(peak_boxes(maps, GRID, HALF), KEYPOINTS, VISIBLE)
    unit_class, unit_concept = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    scores = consistency_from_hits(hits, VISIBLE, LABELS, unit_class, unit_concept, mu=0.8)
    assert scores.consistent.tolist() == [True, False, False, True]
    assert scores.ratios[3].tolist() == [1.0, 0.0, 0.5]
    assert scores.score == pytest.approx(50.0)


def test_class_agnostic_stability_by_hand():
    unit_class, unit_concept = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    clean_peaks = [[(100, 100), (14, 50)]] * 5
    noisy_peaks = [list(row) for row in clean_peaks]
    noisy_peaks[4][1] = (14, 30)  # columns 0..66: C at x = 20 stays, A at x = 50 stays: stable
    noisy_peaks[3][1] = (14, 10)  # columns 0..46: A at x = 50 leaves: unstable
    noisy_peaks[0][0] = (120, 120)  # rows and columns 84..156: A at (100, 100) stays, nothing enters: stable
    noisy_peaks[1][0] = (190, 190)  # B at (200, 200) enters, A leaves: unstable
    clean, noisy = (part_hits(peak_boxes(peak_maps(p), GRID, HALF), KEYPOINTS, VISIBLE) for p in (clean_peaks, noisy_peaks))
    scores = stability_from_hits(clean, noisy, LABELS, unit_class, unit_concept)
    assert scores.stability.tolist() == pytest.approx([2 / 3, 1.0, 1.0, 0.5])
    assert scores.score == pytest.approx(100 * (2 / 3 + 2.5) / 4)


def test_stability_by_hand():
    clean = specific_hits()
    noisy = clean.clone()
    noisy[0, 0, 1] = True
    noisy[3, 1, 2] = True
    scores = stability_from_hits(clean, noisy, LABELS, *SPECIFIC_UNITS)
    assert torch.allclose(scores.stability, torch.tensor([2 / 3, 1.0, 1.0, 0.5], dtype=torch.float64))
    assert scores.score == pytest.approx(100 * (2 / 3 + 2.5) / 4)
    assert stability_from_hits(clean, clean, LABELS, *SPECIFIC_UNITS).score == 100.0


def test_stability_compares_hit_vectors_not_peaks():
    moved = [list(row) for row in SPECIFIC_PEAKS]
    moved[1][1] = (12, 12)  # the peak moves, no part enters or leaves: stable
    moved[3][3] = (151, 151)  # C at y = 187 enters the box: unstable
    moved[4][2] = (14, 120)  # A and C leave the box: unstable
    scores = stability_from_hits(specific_hits(), specific_hits(moved), LABELS, *SPECIFIC_UNITS)
    assert scores.stability.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert scores.score == pytest.approx(75.0)


def test_keypoints_map_into_the_crop_like_the_reference():
    keypoints = torch.tensor([[[60.9, 27.0], [385.0, 331.0], [59.0, 330.99], [10.0, 10.0]]])
    corners = torch.tensor([[60, 27, 385, 331]])
    mapped = keypoints_to_grid(keypoints, corners, GRID)
    assert mapped[0].tolist() == [[0, 0], [224, 224], [0, 223], [-34, -12]]  # truncated toward zero, unclipped
    expected = oracle.grid_part_labels(keypoints[0].numpy(), np.ones(4, bool), (60, 27, 385, 331), GRID)
    assert [[x, y] for _, x, y in expected] == mapped[0].tolist()


# ---------------------------------------------------------------- against the plain-loop oracle


@pytest.mark.parametrize("size", [7, 16, 37, 224, 300])
def test_peaks_agree_with_the_oracle(size: int):
    generator = torch.Generator().manual_seed(size)
    maps = torch.randn(6, 5, size, size, generator=generator)
    boxes = peak_boxes(maps, GRID, HALF)
    for n in range(6):
        for k in range(5):
            y1, y2, x1, x2 = oracle.activated_region(maps[n, k].numpy(), GRID, HALF)
            assert boxes[n, k].tolist() == [y1, y2, x1, x2]


def test_near_ties_below_float32_resolution_are_decided_in_float64():
    maps = torch.zeros(2, 1, 7, 7, dtype=torch.float64)
    maps[:, 0, 3, 3] = 1.0  # a symmetric peak between pixels 111 and 112 of the 224 grid
    maps[0, 0, 4, 3] = maps[0, 0, 3, 4] = 1e-9  # leans down and right
    maps[1, 0, 2, 3] = maps[1, 0, 3, 2] = 1e-9  # leans up and left
    assert peak_positions(maps, GRID)[:, 0].tolist() == [[112, 112], [111, 111]]
    for n, (row, col) in enumerate([(112, 112), (111, 111)]):
        assert oracle.activated_region(maps[n, 0].numpy(), GRID, HALF) == (row - HALF, row + HALF, col - HALF, col + HALF)


def test_peaks_keep_full_precision_when_reduced_precision_matmuls_are_enabled():
    maps = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(5))
    expected = peak_positions(maps, GRID)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert torch.equal(peak_positions(maps, GRID), expected)
    finally:
        torch.set_float32_matmul_precision(previous)


def random_problem(seed: int, images: int = 48, classes: int = 4, channels: int = 8, parts: int = 15):
    """Random maps, labels, fractional keypoints in the original image and integer boxes.

    Parts and concept peaks sit at a random place of their own, jittered per image, so that some
    units are consistent and some are not.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (images,), generator=generator)
    labels[:classes] = torch.arange(classes)
    corners = torch.randint(0, 60, (images, 2), generator=generator)
    corners = torch.cat([corners, corners + torch.randint(80, 300, (images, 2), generator=generator)], dim=1)
    spread = (corners[:, None, 2:] - corners[:, None, :2]).float()
    where = torch.rand(parts, 2, generator=generator) * 1.1 - 0.05 + 0.06 * torch.randn(images, parts, 2, generator=generator)
    keypoints = corners[:, None, :2] + spread * where
    visible = torch.rand(images, parts, generator=generator) < 0.7
    centres = torch.rand(channels, 2, generator=generator) * 6 + 0.3 * torch.randn(images, channels, 2, generator=generator)
    maps = blob_maps(centres) + 0.2 * torch.rand(images, channels, 7, 7, generator=generator)
    part_labels = [oracle.grid_part_labels(keypoints[n].numpy(), visible[n].numpy(), corners[n].tolist(), GRID) for n in range(images)]
    return maps, labels, keypoints_to_grid(keypoints, corners, GRID), visible, part_labels


@pytest.mark.parametrize("mode", ["class-specific", "class-agnostic"])
@pytest.mark.parametrize("mu", [0.8, 0.4])
def test_consistency_agrees_with_the_oracle(mode: str, mu: float):
    maps, labels, keypoints, visible, part_labels = random_problem(seed=1)
    classes, channels, parts = 4, maps.shape[1], keypoints.shape[1]
    if mode == "class-specific":
        per_class = channels // classes
        selected = class_prototypes(maps, labels, per_class)
        channel = torch.arange(channels)
        unit_class, unit_concept = channel // per_class, channel % per_class
        units = list(zip(unit_class.tolist(), channel.tolist()))
    else:
        selected = maps
        unit_class = torch.arange(classes).repeat_interleave(channels)
        unit_concept = torch.arange(channels).repeat(classes)
        units = list(zip(unit_class.tolist(), unit_concept.tolist()))
    hits = part_hits(peak_boxes(selected, GRID, HALF), keypoints, visible)
    scores = consistency_from_hits(hits, visible, labels, unit_class, unit_concept, mu)
    score, consistent, ratios = oracle.oracle_consistency(maps.numpy(), part_labels, labels.numpy(), units, parts, GRID, HALF, mu)
    assert scores.consistent.tolist() == consistent
    assert np.array_equal(scores.ratios.numpy(), np.stack(ratios))
    assert scores.score == pytest.approx(score)
    assert 0 < score < 100  # the comparison is not vacuous


def test_stability_agrees_with_the_oracle():
    maps, labels, keypoints, visible, part_labels = random_problem(seed=2)
    noisy = maps + 0.15 * torch.randn(maps.shape, generator=torch.Generator().manual_seed(3))
    classes, channels, parts = 4, maps.shape[1], keypoints.shape[1]
    unit_class = torch.arange(classes).repeat_interleave(channels)
    unit_concept = torch.arange(channels).repeat(classes)
    clean_hits, noisy_hits = (part_hits(peak_boxes(m, GRID, HALF), keypoints, visible) for m in (maps, noisy))
    scores = stability_from_hits(clean_hits, noisy_hits, labels, unit_class, unit_concept)
    units = list(zip(unit_class.tolist(), unit_concept.tolist()))
    score, stability = oracle.oracle_stability(maps.numpy(), noisy.numpy(), part_labels, labels.numpy(), units, parts, GRID, HALF)
    assert scores.stability.tolist() == pytest.approx(stability)
    assert scores.score == pytest.approx(score)
    assert 0 < score < 100


# ---------------------------------------------------------------- evaluate end to end

BIRD_PARTS = ["beak", "tail", "belly"]


def bird(image_id: int, label: int, blob_on: str, belly_visible: bool) -> Sample:
    """A 120x160 dark image, box (20, 10, 100, 80), a white 9x9 blob on the beak or the tail."""
    keypoints = np.array([[50, 30], [110, 85], [80, 60]], np.float32)
    image = np.full((120, 160, 3), 20, np.uint8)
    x, y = keypoints[BIRD_PARTS.index(blob_on)].astype(int)
    image[y - 4 : y + 5, x - 4 : x + 5] = 255
    return Sample(
        image=image, label=label, image_id=image_id, keypoints=keypoints,
        visible=np.array([True, True, belly_visible]), part_names=tuple(BIRD_PARTS),
        bbox=np.array([20, 10, 100, 80], np.float32),
    )


def birds() -> ListDataset:
    """Class 0: blob on the beak; class 1: blob on the tail, belly never visible."""
    samples = [bird(1, 0, "beak", True), bird(2, 0, "beak", False), bird(3, 1, "tail", False), bird(4, 1, "tail", False), bird(5, 0, "beak", True)]
    return ListDataset(samples, ["beak-bird", "tail-bird"], BIRD_PARTS)


def brightness(images: torch.Tensor) -> torch.Tensor:
    """A concept that follows the image content: brightness pooled onto a 16x16 grid."""
    return torch.nn.functional.adaptive_avg_pool2d(images.mean(dim=1, keepdim=True), 16)


def bright_and_flat(images: torch.Tensor) -> torch.Tensor:
    """Channels (brightness, zero map): the zero map peaks at (0, 0) and hits nothing here."""
    bright = brightness(images)
    return torch.cat([bright, torch.zeros_like(bright)], dim=1)


def test_prepare_batch_crops_resizes_and_maps_keypoints():
    images, keypoints, visible = prepare_batch(birds().samples[:2], GRID)
    assert images.shape == (2, 3, GRID, GRID) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert keypoints[0].tolist() == [[67, 56], [201, 210], [134, 140]]  # int(224 * (50 - 20) / 100), ...
    assert visible.tolist() == [[True, True, True], [True, True, False]]
    row, col = torch.nonzero(images[0, 0] == images[0, 0].max())[0].tolist()
    assert abs(row - 56) <= 14 and abs(col - 67) <= 12  # the blob is where the beak keypoint says


def test_consistency_evaluate_class_agnostic():
    result = Consistency(mode="class-agnostic", device="cpu", batch_size=2)(MapsExplainer(bright_and_flat), birds())
    assert result.name == "consistency" and result.higher_is_better
    assert result.value == pytest.approx(50.0)
    details = result.details
    assert (details["units"], details["images"], details["classes"], details["mode"]) == (4, 5, 2, "class-agnostic")
    assert details["options"]["half_size"] == 36 and details["options"]["mu"] == 0.8
    assert [(u["class"], u["concept"], u["consistent"]) for u in details["per_unit"]] == [
        (0, 0, True), (0, 1, False), (1, 0, True), (1, 1, False)
    ]
    assert (details["per_unit"][0]["part"], details["per_unit"][0]["ratio"]) == ("beak", 1.0)
    assert (details["per_unit"][2]["part"], details["per_unit"][2]["class_name"]) == ("tail", "tail-bird")
    assert json.loads(json.dumps(details)) == details


def test_consistency_evaluate_class_specific_and_concept_selection():
    def specific(images: torch.Tensor) -> torch.Tensor:  # class 0: (bright, flat), class 1: (flat, bright)
        bright, flat = bright_and_flat(images).unbind(dim=1)
        return torch.stack([bright, flat, flat, bright], dim=1)

    explainer = MapsExplainer(specific)
    result = Consistency(device="cpu")(explainer, birds())
    assert result.value == pytest.approx(50.0)
    assert [(u["class"], u["concept"], u["consistent"]) for u in result.details["per_unit"]] == [
        (0, 0, True), (0, 1, False), (1, 2, False), (1, 3, True)
    ]
    assert result.details["prototypes_per_class"] == 2
    assert Consistency(concepts=[0, 3], device="cpu")(explainer, birds()).value == pytest.approx(100.0)
    assert Consistency(concepts=[1, 2], device="cpu")(explainer, birds()).value == pytest.approx(0.0)
    assert Consistency(prototypes_per_class=1, device="cpu")(explainer, birds()).details["units"] == 2


def test_stability_evaluate_without_noise_is_100_and_noise_goes_in_normalised_space():
    explainer = MapsExplainer(bright_and_flat)
    quiet = Stability(mode="class-agnostic", noise_std=0.0, device="cpu")(explainer, birds())
    assert quiet.value == 100.0 and quiet.details["per_unit"][0]["stability"] == 1.0
    explainer.received.clear()
    noisy = Stability(mode="class-agnostic", seed=0, draws=2, device="cpu", batch_size=8)(explainer, birds())
    assert noisy.value == 100.0  # the blob and the zero map shrug off the noise
    assert len(noisy.details["draw_scores"]) == 2
    clean, *perturbed = explainer.received
    assert clean.min() >= 0 and clean.max() <= 1
    for image in perturbed:
        normalised = (image - clean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        assert normalised.abs().amax(dim=(0, 2, 3)).tolist() == pytest.approx([0.25] * 3, abs=1e-5)
        clipped = (torch.randn(10**6, generator=torch.Generator().manual_seed(1)) * 0.2).clamp(-0.25, 0.25)
        assert normalised.std().item() == pytest.approx(clipped.std().item(), abs=2e-3)
        assert image.max() > 1  # not clamped back to [0, 1]
    assert not torch.equal(perturbed[0], perturbed[1])


def lattice_birds(count: int) -> ListDataset:
    """Uniform grey images whose 15 visible keypoints tile the box, so any activated region hits some."""
    grid = np.stack(np.meshgrid(np.linspace(5, 95, 5), np.linspace(5, 95, 3)), -1).reshape(15, 2).astype(np.float32)
    samples = [
        Sample(image=np.full((100, 100, 3), 128, np.uint8), label=n % 2, image_id=n, keypoints=grid,
               visible=np.ones(15, bool), part_names=tuple(f"p{i}" for i in range(15)), bbox=np.array([0, 0, 100, 100], np.float32))
        for n in range(count)
    ]
    return ListDataset(samples, ["a", "b"], [f"p{i}" for i in range(15)])


def test_stability_drops_under_noise_and_seeded_runs_repeat():
    # Flat images: the noise decides the peak (pooled, as clipped noise ties at its maximum).
    explainer = MapsExplainer(lambda images: torch.nn.functional.avg_pool2d(images[:, :1], 9, stride=4))
    data = lattice_birds(8)
    first = Stability(mode="class-agnostic", seed=7, device="cpu")(explainer, data)
    again = Stability(mode="class-agnostic", seed=7, device="cpu")(explainer, data)
    other = Stability(mode="class-agnostic", seed=8, draws=3, device="cpu")(explainer, data)
    assert first.value < 50
    assert first.value == again.value and first.details == again.details
    assert len(other.details["draw_scores"]) == 3
    assert Stability(mode="class-agnostic", noise_std=0.0, device="cpu")(explainer, data).value == 100.0


def test_both_scores_carry_unit_values_whose_mean_is_the_value():
    consistency = Consistency(mode="class-agnostic", device="cpu")(MapsExplainer(bright_and_flat), birds())
    noisy = MapsExplainer(lambda images: torch.nn.functional.avg_pool2d(images[:, :1], 9, stride=4))
    stability = Stability(mode="class-agnostic", seed=8, draws=3, device="cpu")(noisy, lattice_birds(8))
    assert consistency.unit_values == (100.0, 0.0, 100.0, 0.0)  # the units of per_unit, in order
    assert stability.unit_values == pytest.approx([100 * unit["stability"] for unit in stability.details["per_unit"]])
    for result in (consistency, stability):
        assert len(result.unit_values) == result.details["units"]
        assert abs(np.mean(result.unit_values) - result.value) <= 1e-9 and unit_values_problem(result.unit_values, result.value) == ""


def test_evaluate_on_real_cub_photos_matches_the_oracle(cub_mini: Path):
    cub = xaikit.CUBDataset(cub_mini, split="test")
    data = ListDataset([cub[i] for i in range(9)], cub.classes, cub.part_names)
    channels = 2 * len(cub.classes)
    centres = torch.stack([1.3 + torch.arange(channels) * 0.37 % 4, 1.1 + torch.arange(channels) * 0.61 % 4.5], dim=1)
    fixed = blob_maps(centres)  # (K, 7, 7): every channel peaks somewhere else, whatever the image

    explainer = MapsExplainer(lambda images: fixed.expand(len(images), -1, -1, -1))
    part_labels = oracle.read_cub_part_labels(cub_mini, [s.image_id for s in data.samples], GRID)
    _, keypoints, visible = prepare_batch(data.samples, GRID)
    for n, labels in enumerate(part_labels):
        assert [[x, y] for _, x, y in labels] == keypoints[n][visible[n]].tolist()

    result = Consistency(mode="class-specific", mu=0.6, device="cpu", batch_size=4)(explainer, data)
    units = [(u["class"], u["concept"]) for u in result.details["per_unit"]]
    assert sorted({c for c, _ in units}) == sorted(set(data.labels.tolist()))
    maps = fixed.expand(len(data), -1, -1, -1).numpy()
    score, consistent, ratios = oracle.oracle_consistency(maps, part_labels, data.labels, units, 15, GRID, HALF, 0.6)
    assert result.value == pytest.approx(score)
    assert [u["consistent"] for u in result.details["per_unit"]] == consistent
    assert [u["ratio"] for u in result.details["per_unit"]] == pytest.approx([float(r.max()) for r in ratios])
    assert 0 < score < 100


# ---------------------------------------------------------------- unhappy paths and the registry


@pytest.mark.parametrize("half_size", [112, 200, -1])
def test_half_size_that_does_not_fit_is_refused(half_size: int):
    with pytest.raises(XaikitError, match=r"half_size .* does not fit the 224-pixel grid.*36.*84") as error:
        Consistency(half_size=half_size)
    assert "\n" not in str(error.value) and not str(error.value).endswith(".")
    assert Stability(grid=448, half_size=84).half_size == 84


def test_class_specific_refuses_a_concept_count_that_is_not_a_multiple_of_the_classes():
    explainer = MapsExplainer(lambda images: brightness(images).expand(-1, 3, -1, -1))
    with pytest.raises(XaikitError, match="multiple of the 2 classes, but the explainer gives 3"):
        Consistency(device="cpu")(explainer, birds())
    with pytest.raises(XaikitError, match="needs 8 concepts, but the explainer gives 3"):
        Stability(prototypes_per_class=4, device="cpu")(explainer, birds())
    with pytest.raises(XaikitError, match="names channel 5"):
        Consistency(mode="class-agnostic", concepts=[0, 5], device="cpu")(explainer, birds())


class SharedConceptsExplainer(MapsExplainer):
    """Concepts shared by every class, as IVPT's and KLC's parts are."""

    concept_mode = "class-agnostic"


def test_the_mode_defaults_to_the_explainers_concept_mode():
    """Two classes and two shared concepts: ``K = C`` also fits the class-specific layout, which must not be taken."""
    shared = SharedConceptsExplainer(bright_and_flat)
    for default, agnostic in ((Consistency(device="cpu"), Consistency(mode="class-agnostic", device="cpu")),
                              (Stability(seed=0, device="cpu"), Stability(mode="class-agnostic", seed=0, device="cpu"))):
        result = default(shared, birds())
        assert (result.details["mode"], result.details["units"], result.details["options"]["mode"]) == ("class-agnostic", 4, None)
        assert result.value == agnostic(shared, birds()).value
    assert Consistency(device="cpu")(MapsExplainer(bright_and_flat), birds()).details["mode"] == "class-specific"
    per_class = Consistency(prototypes_per_class=1)
    per_class.check(MapsExplainer(bright_and_flat))
    with pytest.raises(XaikitError, match="SharedConceptsExplainer's concepts are class-agnostic"):
        per_class.check(shared)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "per-class"}, "unknown mode 'per-class'"),
        ({"mode": "class-agnostic", "prototypes_per_class": 2}, "class-specific mode only"),
        ({"concepts": []}, "non-empty list"),
        ({"concepts": [1, 1]}, "twice"),
        ({"mu": 1.5}, "mu must be a number between 0.0 and 1.0"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str):
    with pytest.raises(XaikitError, match=message):
        Consistency(**options)


def test_bad_stability_options_are_refused():
    with pytest.raises(XaikitError, match="noise_std"):
        Stability(noise_std=-0.1)
    with pytest.raises(XaikitError, match="draws"):
        Stability(draws=0)


def test_an_explainer_without_concept_maps_is_refused():
    explainer = PlainExplainer(brightness)
    for metric in (Consistency(), Stability()):
        with pytest.raises(CapabilityError, match=f"metric '{metric.name}' needs concept-maps"):
            metric.check(explainer)
        with pytest.raises(CapabilityError):
            metric(explainer, birds())
    assert explainer.received == []


def test_a_sample_without_a_box_is_refused():
    data = birds()
    data.samples[1] = Sample(image=data.samples[1].image, label=0, image_id=42, keypoints=data.samples[1].keypoints,
                             visible=data.samples[1].visible, part_names=tuple(BIRD_PARTS))
    with pytest.raises(XaikitError, match="image 42 has none"):
        Consistency(mode="class-agnostic", device="cpu")(MapsExplainer(bright_and_flat), data)


def test_created_through_the_registry():
    consistency = xaikit.create("metric", "consistency", mode="class-agnostic")
    assert isinstance(consistency, Consistency) and consistency.mode == "class-agnostic"
    stability = xaikit.create("metric", "stability", seed=3, draws=2)
    assert isinstance(stability, Stability) and (stability.seed, stability.draws) == (3, 2)
    assert consistency.requires == frozenset({Capability.CONCEPT_MAPS})
    with pytest.raises(UnknownOptionError, match="has no option 'half'"):
        xaikit.create("metric", "consistency", half=36)


# ---------------------------------------------------------------- each explainer's own input
#
# The reference (EvalProtoPNet's get_corresponding_object_parts, as IVPT runs it at 518) crops the box,
# applies transforms.Resize((S, S)) (PIL bilinear), ToTensor, Normalize(mean, std), and for stability
# perturb_img: noise N(0, 0.2^2) clipped to +-0.25, i.i.d. per element of that normalised (3, S, S) tensor.
# Only the keypoints and peaks use the 224 grid.

WIDE = Preprocess(size=(70, 70), mode="center-crop", crop_pct=1.0, mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.1))


def reference_input(sample: Sample, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The reference's clean model input for one uncropped sample: crop, PIL Resize((S, S)), ToTensor, Normalize."""
    from PIL import Image

    x, y, w, h = (float(v) for v in sample.bbox)
    crop = Image.fromarray(sample.image).crop((int(x), int(y), int(x + w), int(y + h))).resize((size, size), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_the_explainer_receives_the_box_crop_at_its_own_input_size():
    explainer = SizedExplainer(bright_and_flat, WIDE)
    result = Consistency(mode="class-agnostic", device="cpu")(explainer, birds())
    assert result.details["input_size"] == [70, 70]
    (received,) = explainer.received
    assert received.shape == (5, 3, 70, 70), "resized straight to the model's 70 pixels, not to the 224 grid"
    model_input = WIDE(received)
    mean, std = torch.tensor(WIDE.mean).view(1, 3, 1, 1), torch.tensor(WIDE.std).view(1, 3, 1, 1)
    torch.testing.assert_close(model_input, (received - mean) / std)  # the backbone resizes nothing more
    for image, sample in zip(model_input, birds().samples, strict=True):
        expected = reference_input(sample, 70, WIDE.mean, WIDE.std)
        assert (image - expected).abs().mean() < 0.02  # torch's antialiased bilinear against PIL's, normalised units
    # The maps (16 x 16 here) cover the whole crop and are scored on the 224 grid: the same result as at 224.
    assert result.value == Consistency(mode="class-agnostic", device="cpu")(MapsExplainer(bright_and_flat), birds()).value


def test_stability_noise_is_iid_on_the_explainers_normalised_input():
    """The noise the model sees is N(0, 0.2^2) clipped to 0.25 per element of its own input: not smoothed, not weakened."""
    explainer = SizedExplainer(bright_and_flat, WIDE.replace(size=(96, 96)))
    result = Stability(mode="class-agnostic", seed=0, device="cpu", batch_size=8)(explainer, lattice_birds(8))
    clean, noisy = explainer.received
    assert clean.shape == noisy.shape == (8, 3, 96, 96)
    noise = WIDE.replace(size=(96, 96))(noisy) - WIDE.replace(size=(96, 96))(clean)  # in the explainer's normalised units
    assert noise.abs().max().item() == pytest.approx(0.25, abs=1e-5)
    clipped = (torch.randn(10**6, generator=torch.Generator().manual_seed(1)) * 0.2).clamp(-0.25, 0.25)
    assert noise.std().item() == pytest.approx(clipped.std().item(), abs=2e-3)  # 0.163, not the 0.132 of noise resized
    neighbours = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))[0, 1]
    assert abs(neighbours.item()) < 0.02  # i.i.d.: noise drawn at 224 and upsampled correlates at 0.76
    assert result.details["input_size"] == [96, 96]


def test_a_squashing_backbone_and_the_default_frame():
    squash = SizedExplainer(bright_and_flat, WIDE.replace(mode="squash", size=(48, 64), crop_pct=0.5))
    assert explainer_frame(squash, GRID) == Frame((48, 64), (0.5, 0.25, 0.1))
    assert explainer_frame(MapsExplainer(bright_and_flat), GRID) == Frame((GRID, GRID), IMAGENET_STD)
    Consistency(mode="class-agnostic", device="cpu")(squash, birds())
    assert squash.received[0].shape == (5, 3, 48, 64)


def test_a_backbone_that_crops_the_centre_is_refused():
    cropping = SizedExplainer(bright_and_flat, WIDE.replace(crop_pct=0.875))
    for metric in (Consistency(mode="class-agnostic", device="cpu"), Stability(mode="class-agnostic", device="cpu")):
        with pytest.raises(XaikitError, match=r"keeps only the centre 0.875 of its input; build the backbone with crop_pct=1") as error:
            metric(cropping, birds())
        assert str(error.value).count(". ") == 0
    assert not cropping.received, "refused before any image is explained"
