"""``xaikit train`` on the command line, then ``xaikit bench`` and ``xaikit explain`` on its checkpoint."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from xaikit.cli import main

TINY = ["--option", "prototypes=[5,4,3]", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def trained(tiny_birds, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_birds), "--epochs", "2", *TINY, "--out", str(out)]) == 0
    return out


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_train_writes_config_checkpoint_and_test_accuracy(trained, capsys):
    assert {path.name for path in trained.iterdir()} == {"config.json", "checkpoint.safetensors", "metrics.json"}
    config = json.loads((trained / "config.json").read_text())
    assert config["components"]["explainer"]["name"] == "ivpt" and config["epochs"] == 2
    assert config["components"]["explainer"]["options"]["train_batch_size"] == 8
    assert config["device"] == "cpu" and config["device_requested"] == "cpu"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["accuracy"]["images"] == 16 and 0 <= metrics["accuracy"]["top1"] <= 100
    assert metrics["last_epoch"]["epoch"] == 2 and metrics["processes"] == 1  # counted from 1, as printed
    assert all(len(repr(value)) < 12 for value in metrics["accuracy"].values()), "rounded, not 95.19999999999999"


def test_bench_and_explain_load_the_checkpoint(trained, tiny_birds, tmp_path, capsys):
    bench = ["bench", "--explainer", "ivpt", "--data-root", str(tiny_birds), "--option", f"checkpoint={trained}", "--device", "cpu"]
    assert main([*bench, "--metric", "accuracy", "--metric", "consistency", "--out", str(tmp_path / "bench")]) == 0
    assert "intervals resample the images; for consistency, their units" in " ".join(capsys.readouterr().out.split())
    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    trained_top1 = json.loads((trained / "metrics.json").read_text())["accuracy"]["top1"]
    assert summary["metrics"]["accuracy"]["value"] == pytest.approx(trained_top1)
    assert 0 <= summary["metrics"]["consistency"]["value"] <= 100
    item = json.loads((tmp_path / "bench" / "items.jsonl").read_text().splitlines()[0])
    assert len(item["details"]["concepts"]) == 2 and len(item["details"]["hierarchy"]) == 2
    figure = tmp_path / "figure.png"
    assert main(["explain", "3", "--explainer", "ivpt", "--data-root", str(tiny_birds), "--option", f"checkpoint={trained}", "--device", "cpu", "--out", str(figure)]) == 0
    assert Image.open(figure).size[0] > 160 * 3


def test_resume_continues_to_more_epochs_and_refuses_another_recipe(trained, tiny_birds, capsys):
    base = ["train", "--data-root", str(tiny_birds), *TINY, "--out", str(trained)]
    assert main([*base, "--epochs", "2"]) == 2
    assert "already holds a run; pass --resume" in last_error(capsys)
    assert main([*base, "--epochs", "3", "--resume", "--option", "tau=0.5"]) == 2
    assert "it was started with components" in last_error(capsys)
    assert main([*base, "--epochs", "3", "--resume"]) == 0
    assert json.loads((trained / "config.json").read_text())["epochs"] == 3
    assert json.loads((trained / "metrics.json").read_text())["last_epoch"]["epoch"] == 3


def test_train_refusals_are_one_sentence(tiny_birds, tmp_path, capsys):
    out = ["--data-root", str(tiny_birds), "--out", str(tmp_path / "x")]
    assert main(["train", "--explainer", "klc", *out]) == 2
    assert "is not trained" in last_error(capsys)
    assert main(["train", "--preset", "fastest", *out]) == 2
    assert "has no preset 'fastest' (presets: reference)" in last_error(capsys)
    assert main(["train", "--explainer", "klc", "--epochs", "3", *out]) == 2
    assert "takes no epochs" in last_error(capsys)
    assert main(["train", "--option", "backbone.image_size=224", *out]) == 2
    assert "no backbone" in last_error(capsys)
    assert main(["train", "--option", "head=both", *out]) == 2
    assert "unknown head 'both'" in last_error(capsys)
    assert not (tmp_path / "x").exists(), "every refusal comes before the run directory is written"
    untouched = ["--data-root", str(tiny_birds), "--out", str(tmp_path / "zero")]
    assert main(["train", "--option", "epochs=0", *untouched]) == 2
    assert "needs at least 1 epoch, got epochs=0; to evaluate an untrained ivpt, run: xaikit bench" in last_error(capsys)
    assert not (tmp_path / "zero").exists(), "refused before the run directory is claimed"
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0", *untouched])
    assert "--epochs" in capsys.readouterr().err


def test_train_help_lists_only_what_training_takes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--k " not in text and "--segmenter" not in text and "--matcher" not in text
    assert "klc" not in text and "segmenter.radius" not in text and "dataset.per_class=10" in text


def test_train_records_the_data_root_with_home_expanded(tiny_birds, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_birds.parent))
    out = tmp_path / "run"
    assert main(["train", "--data-root", f"~/{tiny_birds.name}", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["data_root"] == str(tiny_birds)


def test_the_reference_preset_names_the_papers_recipe(monkeypatch):
    """The preset is resolved (not run: it needs DINOv2-B weights and a GPU)."""
    import argparse

    import xaikit
    from xaikit.cli.train import train_config

    args = argparse.Namespace(
        option=["epochs=2"], backbone=None, preset="reference", explainer="ivpt", epochs=None, batch_size=None, seed=None,
        dataset="cub", data_root="CUB_200_2011", segmenter=None, matcher=None, k=None, device="cuda",
    )
    config = train_config(args, xaikit.get_registry())
    assert config.backbone == "timm:vit_base_patch14_reg4_dinov2.lvd142m"
    assert config.options["backbone"] == {"image_size": 518, "resize": "center-crop", "crop_pct": 1.0}
    assert config.options["dataset"] == {"crop_to_bbox": False}
    assert config.options["explainer"]["train_batch_size"] == 16 and config.options["explainer"]["augment"] == "reference"
    assert config.options["explainer"]["epochs"] == 2, "an explicit option overrides the preset"


@pytest.mark.parametrize("width", [80, 120])
def test_the_training_bar_keeps_its_count_and_eta_on_one_line(width, monkeypatch):
    import io

    from rich.console import Console

    from xaikit.cli import train

    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    monkeypatch.setattr(train, "stderr", console)
    bar = train._Bar()
    bar.start(epochs=12, steps=40, first_epoch=0)
    terms = {"total": 4.08, "ce": 1.2, "background": 0.98, "consistency": 0.56, "entropy": 0.94, "equivariance": 0.07, "orthogonality": 0.1, "tv": 0.21}
    for _ in range(3):
        bar.step(terms)
    bar.epoch(0, terms)
    bar.step(terms)
    probe = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    probe.print(bar.bar.get_renderable())
    text = probe.export_text().rstrip("\n")
    bar.finish()
    assert "\n" not in text, f"the bar wraps at {width} columns: {text!r}"
    assert "epoch 2/12" in text and "1/40" in text and "loss 4.080" in text, text
