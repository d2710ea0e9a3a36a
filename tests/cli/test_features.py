"""``xaikit features``: extraction by name into the cache, one-line errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from xaikit.cli import main
from xaikit.data.synthetic import SynthConfig, write_synthetic_birds

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    save_file(timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY).state_dict(), tmp_path / "tiny.safetensors")
    write_synthetic_birds(tmp_path / "birds", SynthConfig(classes=2, per_class=2, size=64))
    return [
        "features", "--backbone", "timm:vit_tiny_patch16_224", "--option", f"weights={tmp_path / 'tiny.safetensors'}",
        "--option", f"model_args={json.dumps(TINY)}", "--dataset", "cub", "--data-root", str(tmp_path / "birds"),
        "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
    ]


def test_features_are_extracted_and_cached(setup, tmp_path, capsys):
    assert main(setup) == 0
    out = capsys.readouterr().out
    assert "4 images through timm:vit_tiny_patch16_224 on cpu" in out and "cls (4, 32), patches (4, 4, 4, 32)" in out
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4
    assert main([*setup, "--split", "test"]) == 0
    assert "2 images through" in capsys.readouterr().out


def test_unavailable_device_and_bad_option_are_one_line(setup, capsys):
    if not torch.cuda.is_available():
        assert main([*setup, "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip() == "error: device 'cuda' was requested but torch sees no CUDA GPU; use --device cpu"
    assert main([*setup, "--option", "squash"]) == 2
    assert capsys.readouterr().err.strip() == "error: option 'squash' is not key=value"
    assert main([*setup, "--option", "colour=red"]) == 2
    assert "has no option 'colour'" in capsys.readouterr().err


def test_offline_weights_exit_2_with_one_sentence(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    arguments = ["features", "--backbone", "dinov2", "--dataset", "cub", "--data-root", str(tmp_path / "birds"), "--device", "cpu"]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot load DINOv2 'facebook/dinov2-base': its weights are not on this machine")
    assert err.endswith("and pass model=DIR (as a folder, facebook/dinov2-base does not exist here either)") and "\n" not in err
