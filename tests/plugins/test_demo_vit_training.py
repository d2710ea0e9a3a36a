"""demo-vit: the committed checkpoint and the script that trains it (``xaikit_backbones.demo_vit.train``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from xaikit_backbones.demo_vit import train as demo_train

WEIGHTS = Path(__file__).resolve().parents[2] / "plugins" / "xaikit_backbones" / "demo_vit" / "weights"
MAX_BYTES = 10_000_000
TINY = [
    "--classes", "2", "--per-class", "4", "--size", "64", "--patch-size", "8", "--embed-dim", "32",
    "--depth", "1", "--heads", "2", "--epochs", "2", "--batch-size", "4", "--warmup-epochs", "0.5",
]  # fmt: skip


def _local_dir(path: Path) -> torch.nn.Module:
    """Build the checkpoint in ``path`` through timm's local-dir loader, in eval mode."""
    return timm.create_model(f"local-dir:{path}", pretrained=True).eval()


def test_committed_weights_load_through_timm_local_dir():
    assert (WEIGHTS / "model.safetensors").stat().st_size <= MAX_BYTES
    model = _local_dir(WEIGHTS)
    cfg = model.pretrained_cfg
    side = cfg["input_size"][1]
    assert cfg["input_size"] == (3, side, side) and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    assert list(cfg["mean"]) == list(demo_train.IMAGENET_MEAN) and list(cfg["std"]) == list(demo_train.IMAGENET_STD)
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, tokens = model(images), model.forward_features(images)
    height, width = model.patch_embed.grid_size
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert tokens.shape == (2, 1 + height * width, model.embed_dim) and torch.isfinite(tokens).all()


def test_committed_metrics_match_the_script_defaults():
    metrics = json.loads((WEIGHTS / "metrics.json").read_text())
    defaults = vars(demo_train.parse_args(["--out", "unused"]))
    assert metrics["recipe"] == {k: v for k, v in defaults.items() if k not in ("out", "data")}
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["parameters"] == sum(p.numel() for p in _local_dir(WEIGHTS).parameters())


def test_tiny_training_run_is_reproducible_and_reloads_exactly(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert demo_train.main([*TINY, "--out", str(tmp_path / "a"), "--data", str(tmp_path / "data")]) == 0
    assert demo_train.main([*TINY, "--out", str(tmp_path / "b"), "--data", str(tmp_path / "data")]) == 0
    assert "epoch   2/2" in capsys.readouterr().out
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    first, second = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    reloaded = _local_dir(tmp_path / "a")
    built = demo_train.build_model(demo_train.parse_args([*TINY, "--out", "unused"])).eval()
    built.load_state_dict(first)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(reloaded(images), built(images))
        assert reloaded.forward_features(images).shape == (3, 1 + 8 * 8, 32)

    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["seed"] == 0 and metrics["train_images"] == 4 and metrics["test_images"] == 4
    assert set(metrics["seconds"]) == {"data", "train", "eval", "total"}


def test_another_seed_gives_other_weights(tmp_path):
    demo_train.main([*TINY, "--out", str(tmp_path / "a")])
    demo_train.main([*TINY, "--out", str(tmp_path / "b"), "--seed", "1"])
    first, second = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert not torch.equal(first["head.weight"], second["head.weight"])


def test_data_directory_of_another_configuration_is_refused(tmp_path):
    demo_train.main([*TINY, "--out", str(tmp_path / "a"), "--data", str(tmp_path / "data")])
    with pytest.raises(SystemExit, match="holds a different synthetic-birds dataset"):
        demo_train.main([*TINY, "--per-class", "6", "--out", str(tmp_path / "b"), "--data", str(tmp_path / "data")])


def test_data_directory_holding_other_files_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not a dataset")
    with pytest.raises(SystemExit, match="already exists and is not empty"):
        demo_train.main([*TINY, "--out", str(tmp_path / "a"), "--data", str(tmp_path / "data")])
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "100"], "must be a multiple of --patch-size"),
        (["--embed-dim", "30", "--heads", "4"], "must be a multiple of --heads"),
        (["--epochs", "0"], "must be >= 1"),
        (["--lr", "fast"], "expected a float"),
        (["--classes", "1"], "must be in \\[2, 999\\]"),
        (["--warmup-epochs", "3", "--epochs", "2"], "must be smaller than --epochs"),
    ],
)
def test_bad_arguments_are_argparse_errors(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_train.main(["--out", str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_out_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_train.main([])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
