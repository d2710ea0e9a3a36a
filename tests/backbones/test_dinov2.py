"""The dinov2 backbone on tiny DINOv2 models built from configs, saved and loaded back by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaikit
from xaikit.errors import WeightsUnavailableError, XaikitError

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=8, image_size=32)


def save_tiny(path, registers: int = 0, processor: bool = True):
    torch.manual_seed(0)
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **TINY)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**TINY))
    model.save_pretrained(path)
    if processor:
        transformers.BitImageProcessor(
            size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, resample=3,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
        ).save_pretrained(path)
    return model.eval()


def images(count: int = 2, height: int = 40, width: int = 48):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("registers", [0, 4])
def test_tokens_match_the_model_and_split_cls_registers_and_patches(tmp_path, registers):
    reference = save_tiny(tmp_path, registers)
    backbone = xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu", layers=[1])
    assert backbone.num_prefix_tokens == 1 + registers and backbone.patch_size == 8 and backbone.embed_dim == 32
    pixels = backbone.preprocess(images())
    assert pixels.shape == (2, 3, 32, 32)
    features = backbone.features(pixels)
    assert features.cls.shape == (2, 32) and features.patches.shape == (2, 4, 4, 32)
    with torch.no_grad():
        output = reference(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(features.cls, output.pooler_output)
    torch.testing.assert_close(features.cls, output.last_hidden_state[:, 0])
    torch.testing.assert_close(features.patches, output.last_hidden_state[:, 1 + registers :].reshape(2, 4, 4, 32))
    torch.testing.assert_close(features.layers[1], output.hidden_states[2][:, 1 + registers :].reshape(2, 4, 4, 32))
    again = backbone.features(pixels)
    assert torch.equal(again.cls, features.cls) and torch.equal(again.patches, features.patches)


def test_preprocessing_comes_from_the_processor_config(tmp_path):
    save_tiny(tmp_path)
    backbone = xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu")
    assert backbone.preprocessing.to_dict() == {
        "size": [32, 32], "mode": "center-crop", "crop_pct": 0.8, "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
    }
    squashed = xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu", resize="squash", image_size=48)
    assert squashed.preprocessing.mode == "squash" and squashed.preprocessing.size == (48, 48)
    features = squashed(images(height=30, width=90))
    assert features.patches.shape == (2, 6, 6, 32)  # positional embeddings interpolated


def test_a_directory_given_with_a_tilde_reads_its_processor_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save_tiny(tmp_path / "dinov2")
    backbone = xaikit.create("backbone", "dinov2", model="~/dinov2", device="cpu")
    assert backbone.preprocessing.size == (32, 32) and backbone.preprocessing.mean == (0.5, 0.5, 0.5)


def test_without_a_processor_config_dinov2_defaults_apply(tmp_path):
    save_tiny(tmp_path, processor=False)
    backbone = xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu")
    assert backbone.preprocessing.size == (224, 224) and backbone.preprocessing.crop_pct == pytest.approx(224 / 256)


def test_identity_changes_with_the_weights(tmp_path):
    save_tiny(tmp_path / "a")
    first = xaikit.create("backbone", "dinov2", model=str(tmp_path / "a"), device="cpu")
    second = xaikit.create("backbone", "dinov2", model=str(tmp_path / "a"), device="cpu")
    assert first.fingerprint == second.fingerprint and first.cache_namespace == second.cache_namespace
    torch.manual_seed(1)
    transformers.Dinov2Model(transformers.Dinov2Config(**TINY)).save_pretrained(tmp_path / "b")
    other = xaikit.create("backbone", "dinov2", model=str(tmp_path / "b"), device="cpu")
    assert other.fingerprint != first.fingerprint
    squashed = xaikit.create("backbone", "dinov2", model=str(tmp_path / "a"), device="cpu", resize="squash")
    assert squashed.cache_namespace != first.cache_namespace


def test_offline_without_weights_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(WeightsUnavailableError, match=r"cannot load DINOv2 'facebook/dinov2-small': .* pass model=DIR \(as a folder, facebook/dinov2-small does not exist here either\)$"):
        xaikit.create("backbone", "dinov2", model="facebook/dinov2-small", device="cpu")


@pytest.mark.parametrize("path", ["/data/models/dinov2-base", "~/models/dinov2-base", "./dinov2-base", "models/facebook/dinov2-base"])
def test_a_missing_local_directory_is_named_not_sent_to_the_hub(path):
    with pytest.raises(XaikitError, match=r"the DINOv2 model directory .* does not exist") as caught:
        xaikit.create("backbone", "dinov2", model=path)
    assert "huggingface-cli" not in str(caught.value)


def test_a_directory_that_is_not_dinov2_is_refused(tmp_path):
    transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(XaikitError, match="is a vit model, not DINOv2"):
        xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XaikitError, match="empty is not a transformers DINOv2 directory"):
        xaikit.create("backbone", "dinov2", model=str(tmp_path / "empty"), device="cpu")


def test_a_layer_beyond_the_model_is_refused(tmp_path):
    save_tiny(tmp_path)
    with pytest.raises(XaikitError, match=r"layer 7 does not exist: .* has blocks 0..2"):
        xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu", layers=[7])
    backbone = xaikit.create("backbone", "dinov2", model=str(tmp_path), device="cpu", layers=[-1, 0])
    assert backbone.layers == (0, 2)
