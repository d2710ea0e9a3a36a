"""Preprocessing: known answers for normalisation, squash versus centre crop, tensor input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaikit.backbones import Preprocess, resolve_device
from xaikit.errors import DeviceError, XaikitError


def test_constant_image_normalises_to_the_known_value():
    preprocess = Preprocess(size=(8, 8), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    pixels = preprocess([np.full((20, 30, 3), 255, np.uint8)])
    assert pixels.shape == (1, 3, 8, 8) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_center_crop_keeps_the_middle_and_squash_keeps_everything():
    image = np.zeros((40, 10, 3), np.uint8)  # a tall image: white top quarter, black elsewhere
    image[:10] = 255
    plain = dict(size=(10, 10), interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1))
    cropped = Preprocess(mode="center-crop", **plain)([image])
    squashed = Preprocess(mode="squash", **plain)([image])
    assert cropped.max() == 0  # rows 15..25 of 40: all black
    # nearest-exact samples source rows 2, 6, 10, ...: two of them fall in the white top quarter
    assert squashed[0, 0, :, 0].tolist() == [1.0] * 2 + [0.0] * 8


def test_crop_pct_resizes_the_shorter_side_first():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :6] = 255  # a white left border that the crop must remove
    preprocess = Preprocess(size=(50, 50), crop_pct=0.5, interpolation="bilinear", mean=(0, 0, 0), std=(1, 1, 1))
    pixels = preprocess([image])  # 100 -> resized to 100, cropped to the central 50
    assert pixels.shape == (1, 3, 50, 50) and pixels.max() == 0


def test_tensor_input_matches_array_input():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    preprocess = Preprocess(size=(16, 16))
    as_tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(preprocess(as_tensor), preprocess([image]))
    assert preprocess([]).shape == (0, 3, 16, 16)


def test_override_and_validation():
    base = Preprocess()
    assert base.override() is base
    changed = base.override(image_size=518, resize="squash", crop_pct=1.0)
    assert changed.size == (518, 518) and changed.mode == "squash" and base.size == (224, 224)
    with pytest.raises(XaikitError, match="unknown resize mode 'stretch'"):
        base.override(resize="stretch")
    with pytest.raises(XaikitError, match="crop_pct must be in"):
        Preprocess(crop_pct=1.5)
    with pytest.raises(XaikitError, match="expected an RGB image"):
        base([np.zeros((4, 4), np.uint8)])


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU; use --device cpu"):
            resolve_device("cuda")


@pytest.mark.parametrize("mode", ["center-crop", "squash"])
def test_points_to_image_follows_a_marked_pixel_back_to_the_image(mode):
    """A bright pixel's position in the model frame maps back to where it is in the original image."""
    preprocess = Preprocess(size=(32, 32), mode=mode, crop_pct=0.8, interpolation="nearest")
    image = np.zeros((60, 90, 3), np.uint8)
    image[30:33, 44:47] = 255  # a 3x3 blob centred on pixel (45, 31), i.e. continuous (45.5, 31.5)
    frame = preprocess([image])[0].mean(0)
    ys, xs = torch.nonzero(frame > frame.min() + 1e-3, as_tuple=True)
    centre = torch.stack([xs.float().mean() + 0.5, ys.float().mean() + 0.5])
    back = preprocess.points_to_image(centre, (60, 90))
    cell = max(60, 90) / 32  # one model pixel in image pixels, at most
    assert torch.allclose(back, torch.tensor([45.5, 31.5]), atol=cell)


def test_points_to_image_maps_the_frame_corners_onto_the_crop():
    preprocess = Preprocess(size=(20, 20), mode="center-crop", crop_pct=1.0)
    corners = torch.tensor([[0.0, 0.0], [20.0, 20.0]])
    # a 40x80 image is resized to 20x40 and its middle 20 columns kept: x from 20 to 60 in the image
    assert torch.allclose(preprocess.points_to_image(corners, (40, 80)), torch.tensor([[20.0, 0.0], [60.0, 40.0]]))


def test_denormalise_undoes_the_normalisation():
    preprocess = Preprocess(size=(8, 8), mode="squash")
    pixels = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(preprocess.denormalise(preprocess(pixels)), pixels, atol=1e-6, rtol=1e-6)
