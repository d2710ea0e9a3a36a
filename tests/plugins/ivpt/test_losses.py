"""IVPT losses: known answers on synthetic maps, finite gradients, weights."""

from __future__ import annotations

import math

import pytest
import torch

from xaikit.errors import XaikitError
from xaikit_ivpt.geometry import Affine, inverse_transform, transform, valid_mask
from xaikit_ivpt.losses import (
    EPS,
    LossOptions,
    LossWeights,
    background_presence_loss,
    consistency_loss,
    entropy_loss,
    equivariance_loss,
    orthogonality_loss,
    presence_loss,
    total_variation_loss,
)


def uniform(batch: int = 2, parts: int = 4, height: int = 6, width: int = 6) -> torch.Tensor:
    return torch.full((batch, parts, height, width), 1.0 / parts)


def one_hot(labels: torch.Tensor, parts: int) -> torch.Tensor:
    """(B, h, w) integer labels -> (B, parts, h, w) one-hot float maps."""
    return torch.nn.functional.one_hot(labels, parts).permute(0, 3, 1, 2).float()


def smooth_maps(generator: torch.Generator, parts: int = 4, size: int = 32) -> torch.Tensor:
    """(2, parts, size, size) softmax of Gaussian-blob logits: smooth probability maps."""
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centres = size / 4 + torch.rand(2, parts, 2, generator=generator) * size / 2
    distance = (rows - centres[..., 0, None, None]) ** 2 + (cols - centres[..., 1, None, None]) ** 2
    return torch.softmax(-distance / (2 * (size / 6) ** 2) * 4, dim=1)


def test_presence_known_answers() -> None:
    labels = torch.full((2, 6, 6), 2)  # background everywhere ...
    labels[0, 0:3, 0:3] = 0  # ... but part 0 fills a 3x3 block in image 0
    labels[1, 2:5, 3:6] = 1  # ... and part 1 one in image 1
    assert presence_loss(one_hot(labels, 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert presence_loss(uniform(parts=4)).item() == pytest.approx(1 - 1 / 4)
    # Part 1 present at only 2/9 of its best 3x3 window: the loss is (0 + 7/9) / 2.
    labels[1] = 2
    labels[1, 0, 0:2] = 1
    assert presence_loss(one_hot(labels, 3)).item() == pytest.approx(7 / 18, abs=1e-6)


def reference_enforced_presence(maps: torch.Tensor) -> torch.Tensor:
    """ThomasWangY/IVPT engine/losses/enforced_presence_loss.py, loss_type "enforced_presence", transcribed."""
    pooled = torch.nn.functional.avg_pool2d(maps, 3, stride=1)
    grid_x, grid_y = torch.meshgrid(torch.arange(pooled.shape[2]), torch.arange(pooled.shape[3]), indexing="ij")
    grid_x = (grid_x / grid_x.max()) * 2 - 1
    grid_y = (grid_y / grid_y.max()) * 2 - 1
    mask = grid_x**2 + grid_y**2
    mask = mask / mask.max()
    background = (pooled * mask)[:, -1]
    peak = torch.nn.functional.adaptive_max_pool2d(background, 1).flatten()
    return torch.nn.functional.binary_cross_entropy(peak, torch.ones_like(peak))


def test_background_presence_radial_is_the_reference_code() -> None:
    generator = torch.Generator().manual_seed(3)
    for size in (5, 8, 11):
        maps = torch.softmax(torch.randn(3, 4, size, size, generator=generator) * 2, dim=1)
        torch.testing.assert_close(background_presence_loss(maps), reference_enforced_presence(maps))
    # Background filling the window of pooled cell (0, 2), at (x, y) = (-0.2, -1) on the 6x6 pooled grid:
    # radial weight (0.04 + 1) / 2 = 0.52 (its neighbours score 2/3 * 0.68 and less); the disc counts it fully.
    top = torch.zeros(1, 8, 8, dtype=torch.long)
    top[:, 0:3, 2:5] = 1
    assert background_presence_loss(one_hot(top, 2)).item() == pytest.approx(-math.log(0.52), rel=1e-5)
    assert background_presence_loss(one_hot(top, 2), mask="disc").item() == pytest.approx(0.0, abs=1e-6)


def test_background_presence_disc_known_answers() -> None:
    corners = torch.zeros(2, 8, 8, dtype=torch.long)  # foreground everywhere ...
    corners[:, :3, :3] = 1  # ... background filling the top-left corner window
    for mask in ("radial", "disc"):
        assert background_presence_loss(one_hot(corners, 2), mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    centre = torch.zeros(2, 8, 8, dtype=torch.long)
    centre[:, 3:5, 3:5] = 1  # background only in the middle: no corner window sees it
    assert background_presence_loss(one_hot(centre, 2), mask="disc").item() == pytest.approx(-math.log(EPS), rel=1e-4)
    assert background_presence_loss(uniform(parts=2, height=8, width=8), mask="disc").item() == pytest.approx(math.log(2))
    # The middle of the grid does not count, only towards the corners.
    middle = torch.zeros(1, 8, 8, dtype=torch.long)
    middle[:, 2:6, 2:6] = 1
    assert background_presence_loss(one_hot(middle, 2), mask="disc").item() == pytest.approx(-math.log(1 / 3), rel=1e-4)
    # A 3x3 map pools to a single cell, the centre: every cell counts.
    for mask in ("radial", "disc"):
        assert background_presence_loss(uniform(parts=4, height=3, width=3), mask=mask).item() == pytest.approx(math.log(4))
    with pytest.raises(XaikitError, match="background_mask"):
        background_presence_loss(uniform(), mask="circle")


def test_equivariance_is_small_for_equivariant_maps_and_large_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = smooth_maps(generator)
    affine = Affine(20.0, (0.05, -0.05), 1.1)
    assert equivariance_loss(maps, transform(maps, affine), affine, masked=True).item() < 0.01
    for options in ({}, {"background": True, "masked": True}):
        unrelated = torch.softmax(torch.randn(2, 4, 32, 32, generator=generator) * 3, dim=1)
        assert equivariance_loss(maps, unrelated, affine, **options).item() > 0.2
        assert equivariance_loss(maps, torch.flip(maps, dims=(1,)), affine, **options).item() > 0.2
        # All-zero maps have cosine 0, not NaN.
        assert equivariance_loss(maps, torch.zeros_like(maps), affine, **options).item() == pytest.approx(1.0)


def test_equivariance_default_is_the_reference_code() -> None:
    """Foreground channels only, no validity mask: 1 - mean cosine of the maps and the warped-back maps."""
    generator = torch.Generator().manual_seed(1)
    maps = torch.softmax(torch.randn(2, 5, 12, 12, generator=generator), dim=1)
    other = torch.softmax(torch.randn(2, 5, 12, 12, generator=generator), dim=1)
    affine = Affine(-35.0, (0.1, 0.02), 1.3)
    back = inverse_transform(other, affine)
    cosine = torch.nn.functional.cosine_similarity(maps[:, :-1].flatten(2), back[:, :-1].flatten(2), dim=-1)
    torch.testing.assert_close(equivariance_loss(maps, other, affine), 1 - cosine.mean())
    mask = valid_mask(affine, (12, 12))
    masked = torch.nn.functional.cosine_similarity((maps * mask).flatten(2), (back * mask).flatten(2), dim=-1)
    torch.testing.assert_close(equivariance_loss(maps, other, affine, background=True, masked=True), 1 - masked.mean())
    # A background channel that disagrees only counts when asked for.
    swapped = maps.clone()
    swapped[:, -1] = swapped[:, -1].flip(-1)
    identity = Affine(0.0, (0.0, 0.0), 1.0)
    assert equivariance_loss(maps, swapped, identity).item() == pytest.approx(0.0, abs=1e-6)
    assert equivariance_loss(maps, swapped, identity, background=True).item() > 1e-3


def test_entropy_known_answers() -> None:
    assert entropy_loss(uniform(parts=5)).item() == pytest.approx(math.log(5), rel=1e-5)
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    assert entropy_loss(one_hot(labels, 3)).item() == pytest.approx(0.0, abs=1e-6)


def test_total_variation_known_answers() -> None:
    assert total_variation_loss(uniform()).item() == 0.0
    foreground = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
    maps = torch.stack([foreground, 1 - foreground])[None]
    # Vertical |differences|: 1, 0.5, 0 in both channels, sum 3; horizontal: 0.5, 0.5, 0, 0, sum 2.
    # The reference (torchmetrics "mean") divides the sum 5 by B * H * W = 6 ...
    assert total_variation_loss(maps).item() == pytest.approx(5 / 6)
    # ... "elements" averages each direction over its 6 and 8 differences: 0.5 + 0.25.
    assert total_variation_loss(maps, normalisation="elements").item() == pytest.approx(0.75)
    many = torch.softmax(torch.randn(3, 9, 7, 7, generator=torch.Generator().manual_seed(2)), dim=1)
    vertical = (many[..., 1:, :] - many[..., :-1, :]).abs().sum((1, 2, 3))
    horizontal = (many[..., :, 1:] - many[..., :, :-1]).abs().sum((1, 2, 3))
    torch.testing.assert_close(total_variation_loss(many), (vertical + horizontal).sum() / (3 * 7 * 7))
    with pytest.raises(XaikitError, match="tv_normalisation"):
        total_variation_loss(maps, normalisation="sum")


def test_orthogonality_known_answers() -> None:
    orthonormal = torch.eye(6)[:, :4].expand(2, 6, 4) * torch.tensor([1.0, 2.0, 3.0, 0.5])
    assert orthogonality_loss(orthonormal).item() == pytest.approx(0.0, abs=1e-7)
    identical = torch.randn(3, 8, 1).expand(3, 8, 4)
    assert orthogonality_loss(identical).item() == pytest.approx(1 - 1 / 4, rel=1e-5)


def test_consistency_known_answers() -> None:
    generator = torch.Generator().manual_seed(0)
    final = torch.softmax(torch.randn(2, 4, 5, 5, generator=generator), dim=1)
    fused = torch.softmax(torch.randn(2, 4, 5, 5, generator=generator), dim=1)
    assert consistency_loss(final, final).item() == pytest.approx(0.0, abs=1e-7)
    assert consistency_loss(final, fused).item() > 0
    one_final = torch.tensor([0.7, 0.3]).view(1, 2, 1, 1)
    one_fused = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1)
    expected = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert consistency_loss(one_final, one_fused).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "one-hot"])
def test_every_loss_has_finite_gradients(kind: str) -> None:
    generator = torch.Generator().manual_seed(1)
    if kind == "softmax":
        maps = torch.softmax(torch.randn(2, 4, 8, 8, generator=generator), dim=1)
        other = torch.softmax(torch.randn(2, 4, 8, 8, generator=generator), dim=1)
    else:
        maps = one_hot(torch.randint(0, 4, (2, 8, 8), generator=generator), 4)
        other = one_hot(torch.randint(0, 4, (2, 8, 8), generator=generator), 4)
    maps.requires_grad_(True)
    other.requires_grad_(True)
    features = torch.zeros(2, 5, 4)
    features[:, 0] = 1.0  # identical parts, plus an all-zero one below
    features[:, :, 3] = 0.0
    features.requires_grad_(True)
    affine = Affine(30.0, (0.1, 0.0), 0.9)
    losses = {
        "presence": presence_loss(maps),
        "background": background_presence_loss(maps),
        "equivariance": equivariance_loss(maps, other, affine),
        "equivariance of zeros": equivariance_loss(maps, other * 0, affine),
        "entropy": entropy_loss(maps),
        "tv": total_variation_loss(maps),
        "orthogonality": orthogonality_loss(features),
        "consistency": consistency_loss(maps, other),
    }
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name
        maps.grad = other.grad = features.grad = None
        loss.backward()
        for tensor in (maps, other, features):
            assert tensor.grad is None or torch.isfinite(tensor.grad).all(), name


def test_bad_shapes_raise() -> None:
    for loss in (presence_loss, background_presence_loss, entropy_loss, total_variation_loss):
        with pytest.raises(XaikitError, match="channels"):
            loss(torch.rand(4, 6, 6))
        with pytest.raises(XaikitError, match="channels"):
            loss(torch.rand(1, 1, 6, 6))
    with pytest.raises(XaikitError, match="3x3"):
        presence_loss(uniform(height=2, width=6))
    with pytest.raises(XaikitError, match="2x2"):
        total_variation_loss(uniform(height=1, width=6))
    with pytest.raises(XaikitError, match="same shape"):
        consistency_loss(uniform(), uniform(parts=3))
    with pytest.raises(XaikitError, match="same shape"):
        equivariance_loss(uniform(), uniform(height=8), Affine(0.0, (0.0, 0.0), 1.0))
    with pytest.raises(XaikitError, match="parts"):
        orthogonality_loss(torch.rand(4, 5))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"consistency_target": "frozen"}, "consistency_target"),
        ({"tv_normalisation": "mean"}, "tv_normalisation"),
        ({"background_mask": "ring"}, "background_mask"),
        ({"equivariance_background": "yes"}, "equivariance_background"),
        ({"equivariance_mask": 1}, "equivariance_mask"),
    ],
)
def test_loss_options_refuse_bad_values(options: dict, message: str) -> None:
    with pytest.raises(XaikitError, match=message):
        LossOptions(**options)


@pytest.mark.parametrize("value", [-1, True, "a", float("nan"), float("inf")])
def test_loss_weights_reject_bad_values(value: object) -> None:
    with pytest.raises(XaikitError, match="presence_weight"):
        LossWeights(presence=value)  # type: ignore[arg-type]


def test_loss_weights_total() -> None:
    weights = LossWeights(ce=2.0, presence=0.5, tv=0)
    terms = {"ce": torch.tensor(1.5), "presence": torch.tensor(0.4), "entropy": torch.tensor(3.0)}
    expected = 2.0 * 1.5 + 0.5 * 0.4 + 1.0 * 3.0
    assert weights.total(terms).item() == pytest.approx(expected)
    with_nan = weights.total({**terms, "tv": torch.tensor(float("nan"))})
    assert with_nan.item() == pytest.approx(expected)
    assert weights.total({"tv": torch.tensor(float("nan"))}).item() == 0.0
    assert LossWeights().total({}).item() == 0.0
    with pytest.raises(XaikitError, match="unknown"):
        weights.total({"presense": torch.tensor(1.0)})
    parameter = torch.tensor(2.0, requires_grad=True)
    LossWeights(entropy=3.0).total({"entropy": parameter**2}).backward()
    assert parameter.grad.item() == pytest.approx(12.0)
