"""Batched extraction with the on-disk cache: bit-identical warm runs, no model calls, recomputed corruption."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import xaikit
from xaikit.features.cache import FeatureCache
from xaikit.features.extract import extract_features

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture
def backbone(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)
    save_file(model.state_dict(), tmp_path / "tiny.safetensors")
    backbone = xaikit.create(
        "backbone", "timm:vit_tiny_patch16_224", weights=str(tmp_path / "tiny.safetensors"), model_args=TINY, device="cpu", layers=[0]
    )
    calls = []
    original = backbone.tokens

    def counting(pixels):
        calls.append(len(pixels))
        return original(pixels)

    backbone.tokens = counting
    backbone.calls = calls
    return backbone


@pytest.fixture
def birds(tmp_path):
    return xaikit.create("dataset", "synthetic-birds", root=tmp_path / "birds", classes=2, per_class=3, size=64)


def test_warm_cache_is_bit_identical_and_never_calls_the_model(backbone, birds, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cold = extract_features(backbone, birds, batch_size=4, cache=cache)
    assert backbone.calls == [4, 2]
    assert cold.cls.shape == (6, 32) and cold.patches.shape == (6, 4, 4, 32) and cold.layers[0].shape == (6, 4, 4, 32)
    assert cold.cls.dtype == torch.float32
    warm = extract_features(backbone, birds, batch_size=4, cache=cache)
    assert backbone.calls == [4, 2]  # no further model calls
    for name in ("cls", "patches"):
        assert torch.equal(getattr(warm, name), getattr(cold, name))
    assert torch.equal(warm.layers[0], cold.layers[0])


def test_cached_values_are_the_float16_rounding_of_the_model_output(backbone, birds, tmp_path):
    exact = extract_features(backbone, birds, cache=False)
    cached = extract_features(backbone, birds, cache=FeatureCache(tmp_path / "cache"))
    assert torch.equal(cached.patches, exact.patches.half().float())
    assert not torch.equal(cached.patches, exact.patches)


def test_a_truncated_entry_is_recomputed(backbone, birds, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cold = extract_features(backbone, birds, cache=cache)
    files = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 6
    files[0].write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
    backbone.calls.clear()
    again = extract_features(backbone, birds, cache=cache)
    assert backbone.calls == [1]
    assert torch.equal(again.patches, cold.patches)


def test_partial_hits_compute_only_the_missing_images(backbone, birds, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    first_three = [birds[i] for i in range(3)]
    extract_features(backbone, first_three, cache=cache)
    backbone.calls.clear()
    extract_features(backbone, birds, batch_size=6, cache=cache)
    assert backbone.calls == [3]


def test_default_cache_lives_in_the_user_cache_directory(backbone, birds, tmp_path, monkeypatch):
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path / "user-cache"))
    extract_features(backbone, birds)
    assert len(list((tmp_path / "user-cache" / "features" / backbone.cache_namespace).rglob("*.safetensors"))) == 6


def test_loader_workers_and_plain_arrays(backbone, birds, tmp_path):
    with_workers = extract_features(backbone, birds, num_workers=2, batch_size=2, cache=False)
    arrays = [sample.image for sample in birds]
    in_process = extract_features(backbone, arrays, cache=False)
    torch.testing.assert_close(with_workers.patches, in_process.patches)
    with pytest.raises(ValueError, match="got no images"):
        extract_features(backbone, [], cache=False)


def test_different_preprocessing_never_shares_cache_entries(backbone, tmp_path):
    squashed = xaikit.create(
        "backbone", "timm:vit_tiny_patch16_224", weights=str(tmp_path / "tiny.safetensors"), model_args=TINY,
        device="cpu", layers=[0], resize="squash",
    )
    assert squashed.cache_namespace != backbone.cache_namespace
    image = np.zeros((40, 64, 3), np.uint8)
    image[:, :10] = 255
    cache = FeatureCache(tmp_path / "cache")
    a = extract_features(backbone, [image], cache=cache)
    b = extract_features(squashed, [image], cache=cache)
    assert not torch.equal(a.patches, b.patches)
