"""Part discovery (PDiscoFormer protocol): NMI/ARI by hand and against oracles, the frame geometry, keypoint regression, evaluate end to end."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import xaikit
from xaikit.data.subset import Subset
from xaikit.errors import CapabilityError, UnknownOptionError, XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit_metrics.part_discovery import (
    KeypointRegression,
    PartNMIARI,
    adjusted_rand_index,
    contingency,
    frame_geometry,
    keypoint_labels,
    normalise_by_box,
    normalized_mutual_info,
    prepare_batch,
    regression_errors,
    soft_centroids,
)

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def scores(labels_true: Sequence[int], labels_pred: Sequence[int]) -> tuple[float, float]:
    table = contingency(torch.tensor(labels_true), torch.tensor(labels_pred))
    return normalized_mutual_info(table), adjusted_rand_index(table)


# ---------------------------------------------------------------- NMI and ARI


def test_nmi_and_ari_by_hand():
    # pred refines true: MI = H(true) = ln 2, H(pred) = 1.5 ln 2, NMI = ln 2 / 1.25 ln 2 = 0.8.
    # Pairs (ordered): same in both 2, same true only 2, same pred only 0, neither 8: ARI = 32 / 56.
    nmi, ari = scores([0, 0, 1, 1], [0, 0, 1, 2])
    assert nmi == pytest.approx(0.8, abs=1e-12) and ari == pytest.approx(4 / 7, abs=1e-12)
    # Crossed: independent labelings, MI = 0; ARI = 2 (0 x 4 - 4 x 4) / (4 x 8 + 4 x 8) = -0.5.
    assert scores([0, 0, 1, 1], [0, 1, 0, 1]) == (0.0, -0.5)
    assert scores([3, 3, 7, 7, 9], [1, 1, 0, 0, 5]) == (pytest.approx(1.0), 1.0)
    assert scores([0, 0, 0], [4, 4, 4]) == (1.0, 1.0)  # one label each: sklearn's perfect match
    assert scores([0, 0, 0, 0], [0, 1, 2, 3]) == (0.0, 0.0)  # no information about a single true label


def test_contingency_table_and_its_shape():
    table = contingency(torch.tensor([0, 0, 2, 2, 2]), torch.tensor([1, 1, 0, 1, 1]))
    assert table.tolist() == [[0, 2], [0, 0], [1, 2]]
    assert contingency(torch.tensor([1]), torch.tensor([0]), (3, 4)).shape == (3, 4)
    assert normalized_mutual_info(table) == normalized_mutual_info(table[[0, 2]])  # empty rows change nothing
    assert adjusted_rand_index(table) == adjusted_rand_index(table[[0, 2]])


def brute_force_ari(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Hubert and Arabie's ARI from unordered pair counts, pair by pair."""
    pairs = list(itertools.combinations(range(len(labels_true)), 2))
    same_true = np.array([labels_true[i] == labels_true[j] for i, j in pairs])
    same_pred = np.array([labels_pred[i] == labels_pred[j] for i, j in pairs])
    index, total = float((same_true & same_pred).sum()), len(pairs)
    expected = same_true.sum() * same_pred.sum() / total
    maximum = (same_true.sum() + same_pred.sum()) / 2
    return (index - expected) / (maximum - expected)


def brute_force_nmi(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Mutual information from joint and marginal probabilities, over the arithmetic mean of the entropies."""
    joint = np.array([[np.mean((labels_true == t) & (labels_pred == p)) for p in np.unique(labels_pred)] for t in np.unique(labels_true)])
    rows, cols = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    mutual = (joint[nonzero] * np.log(joint[nonzero] / np.outer(rows, cols)[nonzero])).sum()
    entropy = lambda p: -(p * np.log(p)).sum()  # noqa: E731
    return mutual / ((entropy(rows) + entropy(cols)) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_nmi_and_ari_agree_with_brute_force(seed: int):
    rng = np.random.default_rng(seed)
    labels_true = rng.integers(0, 5, 120)
    labels_pred = np.where(rng.random(120) < 0.6, labels_true * 2 % 7, rng.integers(0, 7, 120))
    nmi, ari = scores(labels_true, labels_pred)
    assert nmi == pytest.approx(brute_force_nmi(labels_true, labels_pred), abs=1e-12)
    assert ari == pytest.approx(brute_force_ari(labels_true, labels_pred), abs=1e-12)
    assert 0.1 < nmi < 0.9 and 0.05 < ari < 0.9


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed; the brute-force oracles cover the same ground")
def test_nmi_and_ari_agree_with_sklearn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(7)
    for size, true_count, pred_count in [(1, 1, 1), (50, 15, 11), (3000, 15, 16), (400, 2, 1)]:
        labels_true, labels_pred = rng.integers(0, true_count, size), rng.integers(0, pred_count, size)
        labels_pred[: size // 2] = labels_true[: size // 2] % pred_count
        nmi, ari = scores(labels_true, labels_pred)
        assert nmi == pytest.approx(normalized_mutual_info_score(labels_true, labels_pred), abs=1e-12)
        assert ari == pytest.approx(adjusted_rand_score(labels_true, labels_pred), abs=1e-12)


def test_nmi_and_ari_ignore_how_labels_are_named():
    rng = np.random.default_rng(3)
    labels_true, labels_pred = rng.integers(0, 6, 300), rng.integers(0, 4, 300)
    labels_pred[:150] = labels_true[:150] % 4
    renamed_true, renamed_pred = rng.permutation(6)[labels_true] + 10, rng.permutation(9)[labels_pred]
    assert scores(renamed_true, renamed_pred) == pytest.approx(scores(labels_true, labels_pred), abs=1e-12)
    assert scores(labels_pred, labels_true) == pytest.approx(scores(labels_true, labels_pred), abs=1e-12)  # symmetric


def test_ari_stays_exact_where_int64_pair_products_would_overflow():
    table = torch.tensor([[40000, 5000], [3000, 39000]])  # ~87k items: products of pair counts exceed 2**63
    ari = adjusted_rand_index(table)
    n = table.sum().item()
    rows, cols, cells = table.sum(1).tolist(), table.sum(0).tolist(), table.flatten().tolist()
    index = sum(math.comb(c, 2) for c in cells)
    a, b = sum(math.comb(r, 2) for r in rows), sum(math.comb(c, 2) for c in cols)
    expected = a * b / math.comb(n, 2)
    assert ari == pytest.approx((index - expected) / ((a + b) / 2 - expected), rel=1e-12)


# ---------------------------------------------------------------- geometry


def test_frame_geometry_follows_torchvision_resize_and_center_crop():
    sizes = torch.tensor([[335, 500], [335, 499], [500, 335], [518, 518], [100, 150]])
    geometry = frame_geometry(sizes, 518, "center-crop")
    # long side int(518 * long / short): 773, 771, 773, 518, 777; crop start round((long - 518) / 2), ties to even
    assert geometry.resized.tolist() == [[518, 773], [518, 771], [773, 518], [518, 518], [518, 777]]
    assert geometry.offset.tolist() == [[128, 0], [126, 0], [0, 128], [0, 0], [130, 0]]  # 127.5 -> 128, 126.5 -> 126
    assert geometry.scale[:, 0].tolist() == pytest.approx([518 / 335, 518 / 335, 518 / 335, 1.0, 5.18])
    squash = frame_geometry(sizes[:1], 224, "squash")
    assert squash.resized.tolist() == [[224, 224]] and squash.scale.tolist() == [[224 / 500, 224 / 335]]
    assert squash.offset.tolist() == [[0.0, 0.0]]


def sample(image: np.ndarray, keypoints: list[list[float]], visible: list[bool], bbox: list[float] | None, label: int = 0, image_id: int = 1) -> Sample:
    parts = tuple(f"p{i}" for i in range(len(keypoints)))
    return Sample(
        image=image, label=label, image_id=image_id, keypoints=np.array(keypoints, np.float32), visible=np.array(visible),
        part_names=parts, bbox=None if bbox is None else np.array(bbox, np.float32),
    )


def test_prepare_batch_maps_keypoints_and_box_and_hides_keypoints_outside_the_crop():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, 60:] = 255  # right part white
    keypoints = [[50, 25], [10, 10], [99.9, 49.9], [75, 0], [0, 0]]
    sample_ = sample(image, keypoints, [True, True, True, True, False], [5, 10, 90, 30])
    batch = prepare_batch([sample_], 100, "center-crop")  # x2: 100 x 200, crop columns 50..149
    assert batch.images.shape == (1, 3, 100, 100) and batch.images.dtype == torch.float32
    assert batch.keypoints[0].flatten().tolist() == pytest.approx([50, 50, -30, 20, 149.8, 99.8, 100, 0, -50, 0], abs=1e-4)
    assert batch.visible[0].tolist() == [True, False, False, True, False]  # x = 100 = S is still inside
    assert batch.boxes[0].tolist() == [0, 20, 180, 60]  # corner shifted and clipped, size only scaled
    assert batch.images[0, :, :, :68].max() == 0 and batch.images[0, :, :, 72:].min() == 1  # white from 120 - 50 = 70 on
    squashed = prepare_batch([sample_], 20, "squash")
    assert squashed.keypoints[0, 0].tolist() == [10, 10] and squashed.boxes[0].tolist() == pytest.approx([1, 4, 18, 12])
    assert torch.isnan(prepare_batch([sample(image, keypoints, [True] * 5, None)], 20, "squash").boxes).all()


def reference_labels(maps: torch.Tensor, keypoints: torch.Tensor, size: int) -> torch.Tensor:
    """The reference's ``eval_nmi_ari_cub``: bilinear upsampling, ``grid_sample(mode="nearest")``, argmax."""
    upsampled = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    points = (keypoints / size * 2 - 1).unsqueeze(2).float()  # (N, P, 1, 2)
    sampled = F.grid_sample(upsampled, points, mode="nearest", align_corners=False)  # (N, K, P, 1)
    return sampled.argmax(dim=1).squeeze(2)


@pytest.mark.parametrize("grid", [7, 16, 37])
def test_keypoint_labels_agree_with_the_reference_sampling(grid: int):
    generator = torch.Generator().manual_seed(grid)
    maps = torch.randn(6, 11, grid, grid, generator=generator)
    keypoints = torch.rand(6, 15, 2, generator=generator) * 223.9
    keypoints[0, :3] = torch.tensor([[0.0, 0.0], [10.5, 11.5], [0.4, 223.0]])  # pixel corners, ties to even
    assert torch.equal(keypoint_labels(maps, keypoints, 224), reference_labels(maps, keypoints, 224))


def test_soft_centroids_use_the_cell_corner_like_the_reference():
    maps = torch.zeros(1, 2, 4, 8)
    maps[0, 0, 1, 2] = maps[0, 0, 1, 4] = 0.5  # mean cell (row 1, column 3)
    maps[0, 1] = 1.0  # uniform: mean cell (1.5, 3.5)
    centroids = soft_centroids(maps, 64)  # cells are 8 x 16 pixels
    assert centroids[0].tolist() == [[24.0, 16.0], [28.0, 24.0]]
    assert soft_centroids(torch.zeros(1, 1, 2, 2), 8).isnan().all()
    boxes = torch.tensor([[8.0, 8.0, 32.0, 16.0]], dtype=torch.float64)
    assert normalise_by_box(centroids, boxes)[0].tolist() == [[0.5, 0.5], [0.625, 1.0]]


# ---------------------------------------------------------------- regression


def test_regression_by_hand_fits_a_linear_keypoint_and_falls_back_to_the_mean_for_inactive_parts():
    # One part, one keypoint: x = 2 c + 1, y = 3 - c on the fitting images; standardised, the fit is exact.
    c = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    fit_centroids = torch.stack([c, c], dim=1)[:, None]  # (4, 1, 2)
    fit_keypoints = torch.stack([2 * c + 1, 3 - c], dim=1)[:, None]
    test_c = torch.tensor([1.5, 10.0, 7.0], dtype=torch.float64)
    test_centroids = torch.stack([test_c, test_c], dim=1)[:, None]
    test_keypoints = torch.tensor([[[4.0, 1.5]], [[21.0, -7.0]], [[0.0, 0.0]]], dtype=torch.float64)
    active = torch.ones(4, 1, dtype=torch.bool)
    test_active = torch.tensor([[True], [True], [False]])
    errors = regression_errors(fit_centroids, active, fit_keypoints, torch.ones(4, 1, dtype=torch.bool),
                               test_centroids, test_active, test_keypoints, torch.ones(3, 1, dtype=torch.bool))
    # Inactive: standardised features 0, prediction = the fitting mean (4, 1.5): distance to (0, 0) = sqrt(18.25).
    assert errors.error == pytest.approx(100 * math.sqrt(18.25) / 3, abs=1e-9)
    assert errors.per_part.tolist() == pytest.approx([100 * math.sqrt(18.25) / 3], abs=1e-9)
    assert errors.test_counts.tolist() == [3] and errors.fit_counts.tolist() == [4]


def regression_problem(seed: int, fit: int = 80, test: int = 40, parts: int = 4, keypoints: int = 3):
    rng = np.random.default_rng(seed)

    def split(count: int) -> list[torch.Tensor]:
        centroids = rng.random((count, parts, 2))
        centroids[rng.random((count, parts)) < 0.1] = np.nan  # maps without mass
        active = (rng.random((count, parts)) < 0.85) & ~np.isnan(centroids[..., 0])
        targets = centroids[:, :keypoints] @ np.array([[0.9, 0.2], [-0.1, 1.1]]) + 0.3 + 0.02 * rng.standard_normal((count, keypoints, 2))
        return [torch.tensor(v) for v in (centroids, active, np.nan_to_num(targets, nan=0.5), rng.random((count, keypoints)) < 0.7)]

    return split(fit), split(test)


def loop_regression(fit: list[torch.Tensor], test: list[torch.Tensor]) -> float:
    """``eval_kpr`` one keypoint at a time in numpy: StandardScaler, zeroed inactive parts, least squares without intercept."""
    (fc, fa, fk, fv), (tc, ta, tk, tv) = ([t.numpy() for t in split] for split in (fit, test))
    fcf, tcf = fc.reshape(len(fc), -1), tc.reshape(len(tc), -1)
    total, count = 0.0, 0
    for p in range(fk.shape[1]):
        rows, seen = fv[:, p], tv[:, p]
        mean, std = np.nanmean(fcf[rows], axis=0), np.nanstd(fcf[rows], axis=0)
        std[std == 0] = 1
        kmean, kstd = fk[rows, p].mean(axis=0), fk[rows, p].std(axis=0)
        design = np.where(np.repeat(fa[rows], 2, axis=1), (fcf[rows] - mean) / std, 0)
        weights = np.linalg.lstsq(design, (fk[rows, p] - kmean) / kstd, rcond=None)[0]
        test_design = np.where(np.repeat(ta[seen], 2, axis=1), (tcf[seen] - mean) / std, 0)
        predicted = test_design @ weights * kstd + kmean
        total += np.linalg.norm(predicted - tk[seen, p], axis=1).sum()
        count += seen.sum()
    return 100 * total / count


@pytest.mark.parametrize("seed", range(3))
def test_regression_agrees_with_a_per_keypoint_loop(seed: int):
    fit, test = regression_problem(seed)
    errors = regression_errors(*fit, *test)
    assert errors.error == pytest.approx(loop_regression(fit, test), rel=1e-9)
    assert 1 < errors.error < 40


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed; the per-keypoint numpy loop covers the same ground")
def test_regression_agrees_with_sklearn():
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    fit, test = regression_problem(11)
    (fc, fa, fk, fv), (tc, ta, tk, tv) = ([t.numpy() for t in split] for split in (fit, test))
    fcf, tcf = fc.reshape(len(fc), -1), tc.reshape(len(tc), -1)
    distances = []
    for p in range(fk.shape[1]):
        rows, seen = fv[:, p], tv[:, p]
        scaler, target_scaler = StandardScaler().fit(fcf[rows]), StandardScaler().fit(fk[rows, p])
        design = np.where(np.repeat(fa[rows], 2, axis=1), scaler.transform(fcf[rows]), 0)
        model = LinearRegression(fit_intercept=False).fit(design, target_scaler.transform(fk[rows, p]))
        predicted = target_scaler.inverse_transform(model.predict(np.where(np.repeat(ta[seen], 2, axis=1), scaler.transform(tcf[seen]), 0)))
        distances.append(np.linalg.norm(predicted - tk[seen, p], axis=1))
    assert regression_errors(*fit, *test).error == pytest.approx(100 * np.concatenate(distances).mean(), rel=1e-9)


# ---------------------------------------------------------------- evaluate end to end

FRAME, GRID, PARTS = 64, 16, ["beak", "crown", "belly", "left-wing", "tail", "outside"]
LAYOUT = np.array([[12, 12], [52, 12], [32, 32], [12, 52], [52, 52]], np.float64)  # in the 64 x 64 frame


class SplitDataset(Dataset):
    """Named splits of samples held in memory; ``split`` gives any of them, like CUBDataset."""

    part_names = PARTS
    classes = ("a", "b")

    def __init__(self, splits: dict[str, list[Sample]], name: str = "test") -> None:
        self.splits, self.name = splits, name

    def __len__(self) -> int:
        return len(self.splits[self.name])

    def __getitem__(self, index: int) -> Sample:
        return self.splits[self.name][index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.splits[self.name]], np.int64)

    def split(self, name: str) -> SplitDataset:
        if name not in self.splits:
            raise XaikitError(f"no split {name}")
        return SplitDataset(self.splits, name)


def birds(seed: int = 0, train: int = 24, test: int = 12) -> tuple[SplitDataset, dict[int, np.ndarray]]:
    """64 x 96 grey images (grey level 3 x (id + 1) names the image), box = the centre 64 x 64 square.

    Five parts jitter around :data:`LAYOUT` in the centre-crop frame; a sixth lies left of the crop.
    Returns the dataset and, per grey level, the keypoints in the frame.
    """
    rng = np.random.default_rng(seed)
    samples, frame_points = [], {}
    for image_id in range(train + test):
        points = LAYOUT + rng.uniform(-4, 4, LAYOUT.shape)
        grey = 3 * (image_id + 1)
        frame_points[grey] = points
        keypoints = np.vstack([points + [16, 0], [[5, 30]]])
        visible = np.append(rng.random(5) < 0.85, True)
        image = np.full((64, 96, 3), grey, np.uint8)
        samples.append(sample(image, keypoints.tolist(), visible.tolist(), [16, 0, 64, 64], label=image_id % 2, image_id=image_id))
    return SplitDataset({"train": samples[:train], "test": samples[train:]}), frame_points


class MapsExplainer(Explainer):
    """Concept maps computed by a function of the images it receives."""

    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS})

    def __init__(self, maps: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.maps = maps

    def fit(self, dataset: Dataset) -> MapsExplainer:
        return self

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        return Explanation(predictions=torch.zeros(len(samples), dtype=torch.int64), scores=torch.zeros(len(samples), 2))

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps(images)


def oracle_maps(frame_points: dict[int, np.ndarray], sigma: float = 0.6, background: float = -3.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Part probabilities on a 16 x 16 grid: channel k peaks on keypoint k of the image, background last."""

    def maps(images: torch.Tensor) -> torch.Tensor:
        greys = (images.mean(dim=(1, 2, 3)) * 255).round().long().tolist()
        centres = torch.tensor(np.stack([frame_points[g] for g in greys]))  # (B, 5, 2) frame pixels
        cells = (torch.arange(GRID, dtype=torch.float64) + 0.5) * FRAME / GRID
        dx = cells.view(1, 1, 1, GRID) - centres[..., 0, None, None]
        dy = cells.view(1, 1, GRID, 1) - centres[..., 1, None, None]
        logits = -(dx**2 + dy**2) / (2 * (sigma * FRAME / GRID) ** 2)
        rest = torch.full((len(greys), 1, GRID, GRID), background, dtype=torch.float64)
        return torch.cat([logits, rest], dim=1).softmax(dim=1).float()

    return maps


def random_maps(images: torch.Tensor) -> torch.Tensor:
    """Part probabilities unrelated to the parts: random per image, the same for the same image."""
    greys = (images.mean(dim=(1, 2, 3)) * 255).round().long().tolist()
    logits = torch.stack([torch.randn(6, GRID, GRID, generator=torch.Generator().manual_seed(g)) * 3 for g in greys])
    return logits.softmax(dim=1)


def test_perfect_parts_give_nmi_and_ari_100():
    data, points = birds()
    result = PartNMIARI(image_size=FRAME, device="cpu", batch_size=5)(MapsExplainer(oracle_maps(points)), data)
    details = result.details
    assert result.name == "part-nmi-ari" and result.higher_is_better
    assert result.value == pytest.approx(100.0) and details["ari"] == pytest.approx(100.0)
    assert details["images"] == 12 and details["channels"] == 6 and details["background_keypoints"] == 0
    assert details["keypoints"] == sum(s.visible[:5].sum() for s in data.splits["test"])  # "outside" never counts
    assert [(p["part"], p["top_channel"], p["share"]) for p in details["per_part"][:5]] == [(name, k, 1.0) for k, name in enumerate(PARTS[:5])]
    assert details["per_part"][5]["keypoints"] == 0
    assert json.loads(json.dumps(details)) == details


def test_parts_unrelated_to_keypoints_give_nmi_and_ari_near_0():
    data, _ = birds(train=0, test=60)
    result = PartNMIARI(image_size=FRAME, device="cpu")(MapsExplainer(random_maps), data)
    assert result.value < 8 and abs(result.details["ari"]) < 3
    assert sum(map(sum, result.details["contingency"])) == result.details["keypoints"]


def test_swapping_concept_channels_changes_nothing():
    data, _ = birds(seed=4)
    shuffled = lambda images: random_maps(images)[:, [3, 0, 5, 1, 4, 2]]  # noqa: E731
    metric = PartNMIARI(image_size=FRAME, device="cpu", background=False)
    plain, swapped = metric(MapsExplainer(random_maps), data), metric(MapsExplainer(shuffled), data)
    assert swapped.value == pytest.approx(plain.value, abs=1e-9) and swapped.details["ari"] == pytest.approx(plain.details["ari"], abs=1e-9)
    assert plain.details["background_keypoints"] is None


def test_perfect_parts_regress_keypoints_almost_exactly():
    data, points = birds()
    result = KeypointRegression(image_size=FRAME, device="cpu", batch_size=7)(MapsExplainer(oracle_maps(points)), data)
    assert result.name == "keypoint-regression" and not result.higher_is_better
    assert result.value < 0.5  # in 1/100 of the box side
    details = result.details
    assert (details["images"], details["fit_images"], details["parts"]) == (12, 24, 5)
    assert details["active_share"] == [1.0] * 5
    assert details["per_part"][5] == {"part": "outside", "error": None, "keypoints": 0, "fit_keypoints": 0}
    assert json.loads(json.dumps(details)) == details
    unrelated = KeypointRegression(image_size=FRAME, device="cpu")(MapsExplainer(random_maps), data)
    assert unrelated.value > 3


def test_keypoint_regression_fits_on_the_split_behind_a_subset_and_can_thin_it():
    data, points = birds()
    explainer = MapsExplainer(oracle_maps(points))
    result = KeypointRegression(image_size=FRAME, device="cpu", fit_images=20)(explainer, Subset(data, [0, 3, 5]))
    assert (result.details["images"], result.details["fit_images"]) == (3, 20)
    assert result.value < 1


def test_inactive_parts_are_zeroed():
    data, points = birds()
    explainer = MapsExplainer(oracle_maps(points, background=1.0))  # a strong background: every part below 0.5
    result = KeypointRegression(image_size=FRAME, device="cpu", active_threshold=0.5)(explainer, data)
    assert result.details["active_share"] == [0.0] * 5
    low = KeypointRegression(image_size=FRAME, device="cpu", active_threshold=0.05)(explainer, data)
    assert low.details["active_share"] == [1.0] * 5 and low.value < result.value


def test_evaluate_on_real_cub_photos_matches_the_reference_pipeline(cub_mini: Path):
    cub = xaikit.CUBDataset(cub_mini, split="test")
    samples = [cub[i] for i in range(4)]
    size = 518

    def colour_maps(images: torch.Tensor) -> torch.Tensor:  # channels follow the photo: R, G, B, darkness
        pooled = F.adaptive_avg_pool2d(images, 37)
        return torch.cat([pooled, 1 - pooled.mean(dim=1, keepdim=True)], dim=1)

    batch = prepare_batch(samples, size, "center-crop")
    for n, s in enumerate(samples):  # the reference's per-keypoint loops on a PIL image
        pil = Image.fromarray(s.image)
        width, height = pil.size
        factor = size / width if height >= width else size / height
        new_size = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
        resized = np.asarray(pil.resize(new_size, Image.BILINEAR), np.float32) / 255
        top, left = int(round((new_size[1] - size) / 2.0)), int(round((new_size[0] - size) / 2.0))
        crop = torch.from_numpy(resized[top : top + size, left : left + size]).permute(2, 0, 1)
        assert (crop - batch.images[n]).abs().mean() < 0.01
        for j, ((x, y), visible) in enumerate(zip(s.keypoints.tolist(), s.visible.tolist(), strict=True)):
            x, y = x * factor - left, y * factor - top
            inside = visible and 0 <= x <= size and 0 <= y <= size
            assert batch.visible[n, j].item() == inside
            if visible:
                assert batch.keypoints[n, j].tolist() == pytest.approx([x, y], abs=1e-4)
    assert not batch.visible.all() and batch.visible.sum() > 20

    labels = reference_labels(colour_maps(batch.images), batch.keypoints, size)[batch.visible]
    parts = torch.arange(15).expand(4, 15)[batch.visible]
    table = contingency(parts, labels)
    result = PartNMIARI(device="cpu", batch_size=3)(MapsExplainer(colour_maps), Subset(cub, range(4)))
    assert result.value == pytest.approx(100 * normalized_mutual_info(table), abs=1e-9)
    assert result.details["ari"] == pytest.approx(100 * adjusted_rand_index(table), abs=1e-9)
    assert result.details["keypoints"] == int(batch.visible.sum()) and 0 < result.value < 100


# ---------------------------------------------------------------- unhappy paths and the registry


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resize": "crop"}, "unknown resize 'crop'"),
        ({"image_size": 0}, "image_size must be an integer of at least 1"),
        ({"background": "yes"}, "background must be true or false"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str):
    for metric in (PartNMIARI, KeypointRegression):
        with pytest.raises(XaikitError, match=message) as error:
            metric(**options)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fit_images": 0}, "fit_images must be an integer of at least 1"),
        ({"active_threshold": -0.1}, "active_threshold must be a number"),
        ({"fit_split": 3}, "fit_split must be a split name"),
    ],
)
def test_bad_regression_options_are_refused(options: dict, message: str):
    with pytest.raises(XaikitError, match=message):
        KeypointRegression(**options)


def test_regression_refuses_what_it_cannot_score():
    data, points = birds(train=6, test=4)
    explainer = MapsExplainer(oracle_maps(points))
    without_train = SplitDataset({"test": data.splits["test"]})
    with pytest.raises(XaikitError, match="fits on the 'train' split, which SplitDataset cannot give"):
        KeypointRegression(image_size=FRAME, device="cpu")(explainer, without_train)
    with pytest.raises(XaikitError, match="a subset cannot be split"):
        KeypointRegression(image_size=FRAME, device="cpu")(explainer, Subset(Subset(data, [0, 1]), [0]))
    with pytest.raises(XaikitError, match="negative concept maps"):
        KeypointRegression(image_size=FRAME, device="cpu")(MapsExplainer(lambda images: oracle_maps(points)(images) - 0.5), data)
    hidden = [sample(s.image, s.keypoints.tolist(), [True, False, True, True, True, True], s.bbox.tolist(), image_id=s.image_id) for s in data.splits["train"]]
    with pytest.raises(XaikitError, match="cannot predict crown: visible in the test images but never in the 6 fitting images"):
        KeypointRegression(image_size=FRAME, device="cpu")(explainer, SplitDataset({"train": hidden, "test": data.splits["test"]}))
    boxless = list(data.splits["test"])
    boxless[2] = sample(boxless[2].image, boxless[2].keypoints.tolist(), boxless[2].visible.tolist(), None, image_id=77)
    with pytest.raises(XaikitError, match="image 77 has none"):
        KeypointRegression(image_size=FRAME, device="cpu")(explainer, SplitDataset({"train": data.splits["train"], "test": boxless}))


def test_nmi_refuses_what_it_cannot_score():
    data, points = birds(train=0, test=3)
    flat = MapsExplainer(lambda images: torch.ones(len(images), 1, 4, 4))
    with pytest.raises(XaikitError, match="needs a foreground and a background channel, but the explainer gives 1"):
        PartNMIARI(image_size=FRAME, device="cpu")(flat, data)
    invisible = [sample(s.image, s.keypoints.tolist(), [False] * 6, s.bbox.tolist()) for s in data.splits["test"]]
    with pytest.raises(XaikitError, match="no visible keypoint inside the 64-pixel frame"):
        PartNMIARI(image_size=FRAME, device="cpu")(MapsExplainer(oracle_maps(points)), SplitDataset({"test": invisible}))
    with pytest.raises(XaikitError, match="expected \\(B, K, h, w\\)"):
        PartNMIARI(image_size=FRAME, device="cpu")(MapsExplainer(lambda images: torch.ones(2, 4, 4)), data)


def test_an_explainer_without_concept_maps_is_refused():
    class Plain(MapsExplainer):
        capabilities = frozenset({Capability.PREDICTIONS})

    for metric in (PartNMIARI(), KeypointRegression()):
        with pytest.raises(CapabilityError, match=f"metric '{metric.name}' needs concept-maps"):
            metric.check(Plain(random_maps))


def test_created_through_the_registry():
    nmi = xaikit.create("metric", "part-nmi-ari", image_size=224, resize="squash")
    assert isinstance(nmi, PartNMIARI) and (nmi.image_size, nmi.resize, nmi.background) == (224, "squash", True)
    regression = xaikit.create("metric", "keypoint-regression", fit_images=100)
    assert isinstance(regression, KeypointRegression) and regression.fit_images == 100 and regression.image_size == 518
    assert nmi.requires == regression.requires == frozenset({Capability.CONCEPT_MAPS})
    with pytest.raises(UnknownOptionError, match="has no option 'grid'"):
        xaikit.create("metric", "part-nmi-ari", grid=7)
