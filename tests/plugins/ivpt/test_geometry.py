"""IVPT geometry: affine warps with known answers, round trips, random draws."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit_ivpt.geometry import Affine, inverse_transform, random_affine, transform, valid_mask

IDENTITY = Affine(0.0, (0.0, 0.0), 1.0)


def blobs(height: int, width: int, generator: torch.Generator, count: int = 3) -> torch.Tensor:
    """(1, 1, height, width) sum of Gaussian blobs, a smooth image."""
    rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centres = torch.rand(count, 2, generator=generator) * torch.tensor([height, width])
    sigma = min(height, width) / 8
    image = sum(torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)) for r, c in centres)
    return image[None, None]


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(row, col) centre of mass of a (1, 1, H, W) image, in pixel-centre coordinates."""
    height, width = image.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    weights = image[0, 0] / image.sum()
    return torch.stack([(weights * rows).sum(), (weights * cols).sum()])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_leaves_images_unchanged(mode: str) -> None:
    images = torch.rand(2, 3, 10, 14)
    torch.testing.assert_close(transform(images, IDENTITY, mode=mode), images)
    torch.testing.assert_close(inverse_transform(images, IDENTITY, mode=mode), images)
    assert torch.all(valid_mask(IDENTITY, (10, 14)) > 0.999)


def test_rotation_by_90_is_counter_clockwise_rot90() -> None:
    images = torch.rand(2, 3, 16, 16)
    rotated = transform(images, Affine(90.0, (0.0, 0.0), 1.0), mode="nearest")
    assert torch.equal(rotated, torch.rot90(images, 1, dims=(-2, -1)))
    bilinear = transform(images, Affine(90.0, (0.0, 0.0), 1.0))
    torch.testing.assert_close(bilinear, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    # Counter-clockwise on screen: the top-right corner goes to the top-left.
    corner = torch.zeros(1, 1, 16, 16)
    corner[..., 0, -1] = 1.0
    assert transform(corner, Affine(90.0, (0.0, 0.0), 1.0), mode="nearest")[0, 0, 0, 0] == 1.0
    back = inverse_transform(rotated, Affine(90.0, (0.0, 0.0), 1.0), mode="nearest")
    assert torch.equal(back, images)


def test_translation_by_a_quarter_shifts_four_pixels_right() -> None:
    images = torch.rand(1, 2, 16, 16)
    shifted = transform(images, Affine(0.0, (0.25, 0.0), 1.0), mode="nearest")
    assert torch.equal(shifted[..., 4:], images[..., :-4])
    assert torch.all(shifted[..., :4] == 0)
    down = transform(images, Affine(0.0, (0.0, 0.25), 1.0), mode="nearest")
    assert torch.equal(down[..., 4:, :], images[..., :-4, :])


def test_scale_two_enlarges_about_the_centre() -> None:
    square = torch.zeros(1, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0
    enlarged = transform(square, Affine(0.0, (0.0, 0.0), 2.0), mode="nearest")
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 4:12, 4:12] = 1.0
    assert torch.equal(enlarged, expected)
    # Everything maps back, but only the central half of the enlarged frame came from inside.
    mask = valid_mask(Affine(0.0, (0.0, 0.0), 2.0), (16, 16))
    assert torch.all(mask[..., 5:11, 5:11] > 0.999)
    assert torch.all(mask[..., :3, :] == 0) and torch.all(mask[..., :, -3:] == 0)


def test_round_trip_recovers_smooth_images_inside_the_mask() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        affine = random_affine(generator)
        image = blobs(32, 32, generator)
        back = inverse_transform(transform(image, affine), affine)
        mask = valid_mask(affine, (32, 32))
        inside = mask > 1 - 1e-5
        assert inside.float().mean() > 0.3
        assert (back - image)[inside].abs().max() < 0.05 * image.max()
        # Along the border the round trip carries the mask's partial weight.
        assert (back - image * mask).abs().max() < 0.05 * image.max()
        assert torch.all((mask >= 0) & (mask <= 1))


def test_round_trip_at_a_lower_resolution() -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        affine = random_affine(generator)
        image = blobs(64, 64, generator)
        low = F.avg_pool2d(image, 4)
        low_of_transformed = F.avg_pool2d(transform(image, affine), 4)
        back = inverse_transform(low_of_transformed, affine)
        inside = valid_mask(affine, (16, 16)) > 1 - 1e-5
        assert inside.float().mean() > 0.3
        assert (back - low)[inside].abs().max() < 0.1 * low.max()
        assert (back - low)[inside].abs().mean() < 0.02 * low.max()


def test_random_affine_is_reproducible_and_in_range() -> None:
    first = [random_affine(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert first[0] == first[1]
    generator = torch.Generator().manual_seed(3)
    draws = [random_affine(generator, degrees=30.0, translate=0.2, scale=(0.5, 2.0)) for _ in range(200)]
    assert len({draw.angle for draw in draws}) == 200
    assert all(-30.0 <= d.angle <= 30.0 and 0.5 <= d.scale <= 2.0 for d in draws)
    assert all(-0.2 <= t <= 0.2 for d in draws for t in d.translate)
    assert max(abs(d.angle) for d in draws) > 25.0
    defaults = [random_affine(generator) for _ in range(100)]
    assert all(-90.0 <= d.angle <= 90.0 and 0.8 <= d.scale <= 1.4 for d in defaults)
    assert all(-0.11 <= t <= 0.11 for d in defaults for t in d.translate)


def test_non_square_rotation_is_a_rotation_in_pixels() -> None:
    height, width = 12, 20
    affine = Affine(90.0, (0.0, 0.0), 1.0)
    centre = torch.tensor([height / 2, width / 2])
    rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")

    def blob(row: float, col: float) -> torch.Tensor:
        return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 2.0)[None, None]

    torch.testing.assert_close(centroid(transform(blob(6.0, 10.0), affine)), centre, atol=1e-4, rtol=0)
    # (dx, dy) = (3, -1) pixels from the centre goes to (dy, -dx) = (-1, -3) at a 90-degree turn.
    moved = centroid(transform(blob(6.0 - 1.0, 10.0 + 3.0), affine))
    torch.testing.assert_close(moved, centre + torch.tensor([-3.0, -1.0]), atol=0.05, rtol=0)
    assert math.isclose((moved - centre).norm().item(), math.sqrt(10.0), abs_tol=0.05)
    # A single pixel (nearest): (row 5, col 11) sits at (1.5, -0.5) from the centre; it goes to (-0.5, -1.5).
    delta = torch.zeros(1, 1, height, width)
    delta[..., 5, 11] = 1.0
    assert transform(delta, affine, mode="nearest").nonzero().tolist() == [[0, 0, 4, 9]]


def test_bad_arguments_raise() -> None:
    with pytest.raises(XaikitError, match="scale"):
        Affine(0.0, (0.0, 0.0), 0.0)
    with pytest.raises(XaikitError):
        Affine(float("nan"), (0.0, 0.0), 1.0)
    with pytest.raises(XaikitError):
        Affine(0.0, (0.0,), 1.0)  # type: ignore[arg-type]
    with pytest.raises(XaikitError, match="mode"):
        transform(torch.rand(1, 1, 4, 4), IDENTITY, mode="bicubic")
    with pytest.raises(XaikitError, match="height"):
        transform(torch.rand(4, 4), IDENTITY)
    with pytest.raises(XaikitError, match="degrees"):
        random_affine(torch.Generator(), degrees=-1.0)
    with pytest.raises(XaikitError, match="scale"):
        random_affine(torch.Generator(), scale=(1.2, 0.8))
