"""Part descriptors: pooling through the interpolation adjoint equals the mean of explicitly upsampled tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaikit.backbones.preprocess import Preprocess
from xaikit.types import PartMap
from xaikit_klc.parts import interpolation_matrix, part_grids, pool_parts


def test_interpolation_matrix_matches_torch_and_rows_sum_to_one():
    matrix = interpolation_matrix(5, 13)
    signal = torch.randn(5)
    expected = F.interpolate(signal.view(1, 1, 5), size=13, mode="linear", align_corners=False).flatten()
    assert torch.allclose(matrix @ signal, expected, atol=1e-6)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(13))
    assert torch.equal(interpolation_matrix(4, 4), torch.eye(4))


def test_pool_parts_equals_the_mean_of_upsampled_tokens():
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(3, 4, 6, 5, generator=generator)
    labels = torch.randint(0, 5, (3, 16, 24), generator=generator)
    labels[1] = 0  # an image without parts
    pooled = pool_parts(patches, labels)
    upsampled = F.interpolate(patches.permute(0, 3, 1, 2), size=(16, 24), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert 1 not in pooled.image.tolist()
    for row in range(len(pooled.label)):
        image, label = int(pooled.image[row]), int(pooled.label[row])
        mask = labels[image] == label
        assert int(pooled.area[row]) == int(mask.sum())
        assert torch.allclose(pooled.descriptor[row], upsampled[image][mask].mean(dim=0), atol=1e-5)
    expected_pairs = {(b, int(v)) for b in range(3) for v in labels[b].unique() if v != 0}
    assert set(zip(pooled.image.tolist(), pooled.label.tolist(), strict=True)) == expected_pairs


def test_pool_parts_on_the_patch_grid_is_a_plain_mean():
    patches = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)
    labels = torch.tensor([[[3, 3], [0, 7]]])
    pooled = pool_parts(patches, labels)
    assert pooled.label.tolist() == [3, 7]
    assert torch.equal(pooled.descriptor, torch.tensor([[1.0, 2.0], [6.0, 7.0]]))


def test_part_grids_follow_the_preprocessing_geometry():
    labels = torch.zeros(20, 40, dtype=torch.int64)
    labels[:, :10] = 1  # the left quarter, which a centre crop cuts away
    part_map = PartMap(labels=labels, names={1: "tail"})
    squashed = part_grids([part_map], Preprocess(size=(8, 8), mode="squash"), (4, 4))
    cropped = part_grids([part_map], Preprocess(size=(8, 8), mode="center-crop"), (4, 4))
    assert squashed[0, :, 0].tolist() == [1, 1, 1, 1] and squashed[0, :, 1:].sum() == 0
    assert cropped.sum() == 0
