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


# ------------------------------------------------ the reference notebook's resizing, against its libraries


def test_mirror_interpolation_is_skimage_resize_of_the_tokens():
    """The notebook: ``skimage.transform.resize(tokens, (64, 64, 768))``, bilinear with mirrored borders."""
    from skimage.transform import resize

    tokens = torch.randn(16, 16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.from_numpy(resize(tokens.numpy(), (64, 64, 8)))
    matrix = interpolation_matrix(16, 64, "mirror").double()
    torch.testing.assert_close(torch.einsum("gi,ijd,hj->ghd", matrix, tokens, matrix), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(interpolation_matrix(16, 64, "clamp"), interpolation_matrix(16, 64, "mirror"))
    uneven = torch.randn(5, 3, 2, dtype=torch.float64)
    got = torch.einsum("gi,ijd,hj->ghd", interpolation_matrix(5, 13, "mirror").double(), uneven, interpolation_matrix(3, 7, "mirror").double())
    torch.testing.assert_close(got, torch.from_numpy(resize(uneven.numpy(), (13, 7, 2))), rtol=0, atol=1e-6)
    assert torch.equal(interpolation_matrix(4, 4, "mirror"), torch.eye(4))


def test_pool_parts_with_mirrored_tokens_is_the_mean_of_skimage_upsampled_tokens():
    from skimage.transform import resize

    generator = torch.Generator().manual_seed(1)
    patches = torch.randn(1, 4, 4, 3, generator=generator)
    labels = torch.randint(0, 3, (1, 16, 16), generator=generator)
    pooled = pool_parts(patches, labels, "mirror")
    upsampled = torch.from_numpy(resize(patches[0].double().numpy(), (16, 16, 3))).float()
    for row, label in enumerate(pooled.label.tolist()):
        torch.testing.assert_close(pooled.descriptor[row], upsampled[labels[0] == label].mean(0), atol=1e-5, rtol=1e-5)


def test_floor_nearest_part_grids_are_opencv_inter_nearest():
    """The notebook: ``cv2.resize(label_map, (224, 224), INTER_NEAREST)``, then each part to 64 x 64 the same way."""
    import cv2
    import numpy as np

    labels = torch.randint(0, 9, (187, 301), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    squash = Preprocess(size=(224, 224), mode="squash")
    grids = part_grids([PartMap(labels=labels, names={})], squash, (64, 64), nearest="nearest")
    frame = cv2.resize(labels.numpy().astype(np.uint8), (224, 224), interpolation=cv2.INTER_NEAREST)
    expected = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(grids[0].numpy(), expected)
    exact = part_grids([PartMap(labels=labels, names={})], squash, (64, 64))
    assert not torch.equal(exact, grids), "nearest-exact (xaikit's default) picks other source pixels"


def test_pil_bilinear_squash_is_torchvisions_resize_on_pil_images():
    """The notebook: ``transforms.Compose([Resize((224, 224)), ToTensor(), Normalize(...)])`` on a PIL image."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms

    image = np.random.default_rng(3).integers(0, 256, (187, 301, 3), dtype=np.uint8)
    notebook = transforms.Compose([
        transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    preprocess = Preprocess(size=(224, 224), mode="squash", interpolation="pil-bilinear")
    torch.testing.assert_close(preprocess.one(image), notebook(Image.fromarray(image)), rtol=0, atol=1e-6)
    bicubic = Preprocess(size=(224, 224), mode="squash", interpolation="bicubic")  # what the dinov2 processor asks for
    assert (bicubic.one(image) - preprocess.one(image)).abs().max() > 0.1
