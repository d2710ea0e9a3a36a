"""The open_clip:<arch> backbone on a tiny ViT registered from a JSON config, saved and loaded back by path."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import xaikit
from xaikit.errors import WeightsUnavailableError, XaikitError

open_clip = pytest.importorskip("open_clip")
from xaikit_backbones.open_clip_vit import OpenCLIPBackbone  # noqa: E402 - needs open_clip present

ARCH = "xaikit-tiny-ViT-8"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module", autouse=True)
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Register the tiny architecture (a 32 px ViT, 4x4 patches of width 32, 2 heads, 2 blocks) with open_clip."""
    config = tmp_path_factory.mktemp("open_clip_configs") / f"{ARCH}.json"
    config.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config)


def tiny_model(seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH, pretrained=None, **options).eval()


@pytest.fixture
def weights(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A randomly initialised tiny CLIP and its full state dict saved as safetensors."""
    model = tiny_model()
    path = tmp_path / "tiny.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, path)
    return model, path


def images(count: int = 3, height: int = 32, width: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_weights_round_trip_and_cls_is_the_pooled_output_before_projection(weights):
    reference, path = weights
    backbone = xaikit.create("backbone", f"open_clip:{ARCH}", pretrained=str(path), device="cpu")
    assert isinstance(backbone, OpenCLIPBackbone) and backbone.name == f"open_clip:{ARCH}@tiny.safetensors"
    assert (backbone.patch_size, backbone.embed_dim, backbone.num_prefix_tokens, backbone.num_blocks) == (8, 32, 1, 2)
    pixels = backbone.preprocess(images())
    features = backbone.features(pixels)
    assert features.cls.shape == (3, 32) and features.patches.shape == (3, 4, 4, 32) and features.layers == {}
    reference.visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = reference.visual(pixels)
    torch.testing.assert_close(features.cls @ reference.visual.proj, pooled)
    torch.testing.assert_close(features.patches, tokens.reshape(3, 4, 4, 32))
    torch.testing.assert_close(backbone.model.state_dict(), reference.visual.state_dict())
    again = backbone.features(pixels)
    assert torch.equal(again.cls, features.cls) and torch.equal(again.patches, features.patches)


def test_layers_are_raw_block_outputs_and_negative_indices_count_from_the_end(weights):
    reference, path = weights
    backbone = OpenCLIPBackbone(ARCH, pretrained=str(path), device="cpu", layers=[0, -1])
    assert backbone.layers == (0, 1)
    pixels = backbone.preprocess(images(2))
    features = backbone.features(pixels)
    with torch.no_grad():
        intermediates = reference.visual.forward_intermediates(pixels, indices=[0, 1], output_fmt="NLC", intermediates_only=True)
    for index in (0, 1):
        expected = intermediates["image_intermediates"][index].reshape(2, 4, 4, 32)
        torch.testing.assert_close(features.layers[index], expected)
    with pytest.raises(XaikitError, match="layer 2 does not exist"):
        OpenCLIPBackbone(ARCH, pretrained=str(path), device="cpu", layers=[2])


def test_larger_input_interpolates_positional_embeddings(weights):
    reference, path = weights
    backbone = OpenCLIPBackbone(ARCH, pretrained=str(path), device="cpu", image_size=48, layers=[-1])
    assert backbone.preprocessing.size == (48, 48)
    features = backbone(images(2, 60, 90))
    assert features.cls.shape == (2, 32) and features.patches.shape == (2, 6, 6, 32) and features.layers[1].shape == (2, 6, 6, 32)
    table = reference.visual.positional_embedding
    assert backbone.positions((4, 4)).shape == (1, 17, 32) and torch.equal(backbone.positions((4, 4))[0], table)
    resampled = backbone.positions((6, 6))[0]
    assert resampled.shape == (37, 32) and torch.equal(resampled[0], table[0])
    assert torch.isfinite(features.patches).all()


def test_preprocessing_follows_the_model_config_and_resize_switches_mode(weights):
    reference, path = weights
    crop = OpenCLIPBackbone(ARCH, pretrained=str(path), device="cpu")
    squash = OpenCLIPBackbone(ARCH, pretrained=str(path), device="cpu", resize="squash")
    config = open_clip.get_model_preprocess_cfg(reference)
    assert crop.preprocessing.to_dict() == {
        "size": [32, 32], "mode": "center-crop", "crop_pct": 1.0, "interpolation": config["interpolation"],
        "mean": list(config["mean"]), "std": list(config["std"]),
    }
    assert crop.preprocessing.mean == open_clip.OPENAI_DATASET_MEAN and squash.preprocessing.mode == "squash"
    wide = images(1, 32, 96)
    assert not torch.allclose(crop.preprocess(wide), squash.preprocess(wide))
    assert crop.cache_namespace != squash.cache_namespace


def test_a_tag_brings_its_preprocessing_and_quick_gelu(weights, monkeypatch):
    _, path = weights
    tag = {"file": str(path), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear", "resize_mode": "squash", "quick_gelu": True}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, name: tag if (arch, name) == (ARCH, "tiny_tag") else {})
    backbone = OpenCLIPBackbone(ARCH, pretrained="tiny_tag", device="cpu")
    assert backbone.name == f"open_clip:{ARCH}@tiny_tag"
    assert (backbone.preprocessing.mean, backbone.preprocessing.std) == ((0.5,) * 3, (0.25,) * 3)
    assert (backbone.preprocessing.interpolation, backbone.preprocessing.mode) == ("bilinear", "squash")
    quick = tiny_model(force_quick_gelu=True)
    pixels = backbone.preprocess(images(2))
    with torch.no_grad():
        expected = quick.visual(pixels)
    torch.testing.assert_close(backbone.features(pixels).cls @ quick.visual.proj, expected)


def test_pickled_checkpoints_load_weights_only(weights, tmp_path):
    reference, _ = weights
    torch.save({"state_dict": {f"module.{key}": value for key, value in reference.state_dict().items()}}, tmp_path / "tiny.pt")
    backbone = OpenCLIPBackbone(ARCH, pretrained=str(tmp_path / "tiny.pt"), device="cpu")
    torch.testing.assert_close(backbone.model.state_dict(), reference.visual.state_dict())
    torch.save({"weights": reference.state_dict(), "note": object()}, tmp_path / "unsafe.pt")
    with pytest.raises(XaikitError, match=r"unsafe\.pt cannot be read safely as tensors"):
        OpenCLIPBackbone(ARCH, pretrained=str(tmp_path / "unsafe.pt"), device="cpu")


def test_a_checkpoint_of_another_arch_is_refused(tmp_path):
    other = open_clip.create_model(ARCH, pretrained=None, force_image_size=48)
    save_file({key: value.contiguous() for key, value in other.state_dict().items()}, tmp_path / "other.safetensors")
    with pytest.raises(XaikitError, match=r"other\.safetensors does not hold the visual tower of open_clip .*'positional_embedding'"):
        OpenCLIPBackbone(ARCH, pretrained=str(tmp_path / "other.safetensors"), device="cpu")


def test_missing_tag_offline_is_one_sentence_without_network(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    message = r"^The weights of open_clip 'ViT-B-32' tag 'laion2b_s34b_b79k' .*pretrained=/path/to/file\.safetensors\.$"
    with pytest.raises(WeightsUnavailableError, match=message):
        xaikit.create("backbone", "open_clip:ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    assert attempts == []


def test_unknown_arch_tag_and_unsupported_towers_are_refused():
    with pytest.raises(XaikitError, match=r"unknown open_clip architecture 'ViT-B-61'; did you mean .*'ViT-B-16'"):
        OpenCLIPBackbone("ViT-B-61")
    with pytest.raises(XaikitError, match=r"'laion2b_s34b_b79' is neither a checkpoint file nor a pretrained tag .*did you mean 'laion2b_s34b_b79k'"):
        OpenCLIPBackbone("ViT-B-32", pretrained="laion2b_s34b_b79")
    with pytest.raises(XaikitError, match=r"the checkpoint file \S*missing\.safetensors does not exist"):
        OpenCLIPBackbone("ViT-B-32", pretrained="missing.safetensors")
    with pytest.raises(XaikitError, match="has a ResNet visual tower"):
        OpenCLIPBackbone("RN50")
    with pytest.raises(XaikitError, match="pools its visual tower with attention"):
        OpenCLIPBackbone("coca_ViT-B-32")
