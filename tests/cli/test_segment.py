"""``xaikit segment``: a colour overlay with a legend, one-sentence errors; and vlpart without detectron2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaikit.cli import main
from xaikit.cli.segment_figure import PALETTE, colourise, legend, overlay
from xaikit.types import PartMap

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
VLPART_HINT = (
    "error: segmenter 'vlpart' needs 'detectron2', which is not installed; install it with: build detectron2 from source "
    "(pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'), then clone "
    "https://github.com/facebookresearch/VLPart, pip install clip-anytorch 'setuptools<80' lvis nltk opencv-python-headless "
    "scikit-learn ftfy regex (not its requirements.txt, which pins timm 0.5) and pass source=VLPart "
    "(step by step in docs/segmenters.md#vlpart)"
)

_spec = importlib.util.spec_from_file_location(
    "tiny_clipseg", Path(__file__).resolve().parents[1] / "plugins" / "segmenters" / "tiny_clipseg.py"
)
tiny_clipseg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_clipseg)


@pytest.fixture
def photo(cub_mini: Path) -> Path:
    """The first real CUB photograph."""
    return cub_mini / "images" / (cub_mini / "images.txt").read_text().split()[1]


def errors(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_segment_writes_an_overlay_with_a_legend(photo, tmp_path, capsys):
    pytest.importorskip("transformers")
    tiny_clipseg.save_tiny_clipseg(tmp_path / "tiny")
    out = tmp_path / "figures" / "overlay.png"
    arguments = ["segment", str(photo), "--segmenter", "clipseg", "--vocabulary", "bird head, bird beak",
                 "--option", f"model={tmp_path / 'tiny'}", "--option", "threshold=0.5", "--device", "cpu", "--out", str(out)]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "part(s): bird head" in printed and f"wrote {out}" in printed
    width, height = Image.open(photo).size
    figure = np.asarray(Image.open(out))
    assert figure.shape[0] >= height and figure.shape[1] > width and figure.shape[2] == 3
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert not np.array_equal(figure[:height, :width], original)  # parts are coloured in


def test_segment_refusals_are_one_sentence(photo, tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing.jpg"), "--segmenter", "dino-parts", "--out", str(tmp_path / "a.png")]) == 2
    assert errors(capsys) == [f"error: image file {tmp_path / 'missing.jpg'} does not exist"]
    assert main(["segment", str(photo), "--segmenter", "annotations", "--out", str(tmp_path / "b.png")]) == 2
    assert "the annotations segmenter needs an annotated dataset image" in errors(capsys)[-1]
    assert main(["segment", str(photo), "--segmenter", "dino-parts", "--vocabulary", "bird head", "--out", str(tmp_path / "c.png")]) == 2
    assert errors(capsys)[-1].startswith("error: segmenter 'dino-parts' has no option 'vocabulary'")
    assert not any((tmp_path / name).exists() for name in ("a.png", "b.png", "c.png"))


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
def test_vlpart_without_detectron2_says_how_to_install_it(photo, tmp_path, capsys):
    assert main(["bench", "--segmenter", "vlpart", "--explainer", "klc", "--out", str(tmp_path / "run")]) == 2
    lines = errors(capsys)
    assert lines[-1] == VLPART_HINT and not any("Traceback" in line for line in lines)
    assert not (tmp_path / "run").exists()
    assert main(["segment", str(photo), "--segmenter", "vlpart", "--out", str(tmp_path / "overlay.png")]) == 2
    assert errors(capsys) == [VLPART_HINT]


def test_colourise_blends_only_labelled_pixels():
    image = np.full((2, 3, 3), 100, np.uint8)
    part_map = PartMap(torch.tensor([[0, 1, 2], [0, 0, 1]]), {1: "bird head", 2: "bird beak"})
    coloured = colourise(image, part_map, alpha=0.5)
    assert (coloured[:, 0] == 100).all() and (coloured[1, 1] == 100).all()
    np.testing.assert_array_equal(coloured[0, 1], np.round(50 + PALETTE[0] / 2).astype(np.uint8))
    np.testing.assert_array_equal(coloured[0, 2], np.round(50 + PALETTE[1] / 2).astype(np.uint8))


def test_overlay_puts_a_legend_beside_the_image():
    image = np.zeros((20, 30, 3), np.uint8)
    part_map = PartMap(torch.zeros(20, 30, dtype=torch.int64), {1: "bird head"})
    part_map.labels[5:10, 5:10] = 1
    figure = overlay(image, part_map)
    panel = legend([(1, "bird head")], 20)
    assert figure.shape == (max(20, panel.shape[0]), 30 + panel.shape[1], 3)
    assert (figure[: panel.shape[0], 30:] == panel).all()
    assert (panel == PALETTE[0]).all(axis=2).any()  # the swatch
    assert legend([], 5).shape[1] > 20  # "no parts found"
