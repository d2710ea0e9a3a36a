"""The timm:<model> backbone on tiny ViTs built from configs, saved and loaded back by path."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import xaikit
from xaikit.errors import WeightsUnavailableError, XaikitError

ARCH = "vit_tiny_patch16_224"
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def tiny_model(**extra):
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, num_classes=0, **TINY, **extra).eval()


def images(count: int = 3, height: int = 32, width: int = 32):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize(("registers", "prefix"), [(0, 1), (4, 5)])
def test_weights_file_round_trip_and_prefix_tokens(tmp_path, registers, prefix):
    reference = tiny_model(reg_tokens=registers)
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    backbone = xaikit.create(
        "backbone", f"timm:{ARCH}", weights=str(tmp_path / "model.safetensors"),
        model_args={**TINY, "reg_tokens": registers}, device="cpu", layers=[0, -1],
    )
    assert backbone.num_prefix_tokens == prefix and backbone.layers == (0, 2)
    pixels = backbone.preprocess(images())
    features = backbone.features(pixels)
    assert features.cls.shape == (3, 32) and features.patches.shape == (3, 4, 4, 32)
    with torch.no_grad():
        tokens = reference.forward_features(pixels)
        intermediates = reference.forward_intermediates(pixels, indices=[0], output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(features.cls, tokens[:, 0])
    torch.testing.assert_close(features.patches, tokens[:, prefix:].reshape(3, 4, 4, 32))
    torch.testing.assert_close(features.layers[0], intermediates[0].reshape(3, 4, 4, 32))
    assert set(features.layers) == {0, 2}
    again = backbone.features(pixels)
    assert torch.equal(again.patches, features.patches) and torch.equal(again.cls, features.cls)


def test_local_dir_checkpoint_and_pretrained_config(tmp_path):
    reference = tiny_model()
    reference.pretrained_cfg = {**reference.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.8, "input_size": (3, 32, 32)}
    timm.models.save_for_hf(reference, tmp_path, model_config={"model_args": TINY})
    backbone = xaikit.create("backbone", f"timm:local-dir:{tmp_path}", device="cpu")
    assert backbone.preprocessing.to_dict() == {
        "size": [32, 32], "mode": "center-crop", "crop_pct": 0.8, "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
    }
    pixels = backbone.preprocess(images())
    with torch.no_grad():
        expected = reference.forward_features(pixels)[:, 0]
    torch.testing.assert_close(backbone.features(pixels).cls, expected)


def test_dynamic_image_size_resamples_positional_embeddings(tmp_path):
    save_file(tiny_model().state_dict(), tmp_path / "model.safetensors")
    backbone = xaikit.create(
        "backbone", f"timm:{ARCH}", weights=str(tmp_path / "model.safetensors"), model_args=TINY,
        image_size=48, resize="squash", device="cpu",
    )
    assert backbone.preprocessing.size == (48, 48) and backbone.preprocessing.mode == "squash"
    assert backbone(images(height=20, width=70)).patches.shape == (3, 6, 6, 32)


def test_offline_pretrained_weights_are_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    with pytest.raises(WeightsUnavailableError, match=r"cannot load pretrained weights for timm model 'vit_tiny_patch16_224.augreg_in21k'.*weights=/path/to/model.safetensors"):
        xaikit.create("backbone", "timm:vit_tiny_patch16_224.augreg_in21k", device="cpu")


def test_unknown_model_and_missing_weights_file(tmp_path):
    with pytest.raises(XaikitError, match="unknown timm model 'vit_tiny_patch16_22'; did you mean 'vit_tiny_patch16_224'"):
        xaikit.create("backbone", "timm:vit_tiny_patch16_22", pretrained=False, device="cpu")
    with pytest.raises(XaikitError, match=r"weights file .*nothing.safetensors does not exist"):
        xaikit.create("backbone", f"timm:{ARCH}", weights=str(tmp_path / "nothing.safetensors"), device="cpu")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(XaikitError, match="cannot load weights file .*bad.safetensors into timm model"):
        xaikit.create("backbone", f"timm:{ARCH}", weights=str(tmp_path / "bad.safetensors"), model_args=TINY, device="cpu")


def test_a_model_without_prefix_tokens_is_refused():
    with pytest.raises(XaikitError, match="is not a vision transformer"):
        xaikit.create("backbone", "timm:resnet18", pretrained=False, device="cpu")


def test_dynamic_img_size_models_take_any_input_size(tmp_path):
    save_file(tiny_model().state_dict(), tmp_path / "model.safetensors")
    backbone = xaikit.create(
        "backbone", f"timm:{ARCH}", weights=str(tmp_path / "model.safetensors"),
        model_args={**TINY, "dynamic_img_size": True}, device="cpu",
    )
    for side, grid in ((32, 4), (48, 6), (64, 8)):
        features = backbone.features(torch.zeros(1, 3, side, side))
        assert features.patches.shape == (1, grid, grid, 32)


def test_random_weights_are_the_same_in_every_process_and_leave_the_callers_random_state():
    """``pretrained=False`` draws from a fixed seed, so torchrun's processes build one model and share one cache namespace."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = xaikit.create("backbone", "timm:vit_tiny_patch16_224", pretrained=False, model_args=TINY, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(7)
    second = xaikit.create("backbone", "timm:vit_tiny_patch16_224", pretrained=False, model_args=TINY, device="cpu")
    assert first.fingerprint == second.fingerprint and first.cache_namespace == second.cache_namespace
