"""The built-in datasets plugin: ``cub`` and ``synthetic-birds`` built by name."""

from __future__ import annotations

import pytest

import xaikit
import xaikit_datasets.synthetic as synthetic_plugin
from xaikit.data.cub import CUBDataset


def test_synthetic_birds_is_generated_into_the_cache_once(monkeypatch, tmp_path):
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path / "cache"))
    dataset = xaikit.create("dataset", "synthetic-birds", classes=3, per_class=4, size=96, seed=5, split="train", crop_to_bbox=False)
    assert isinstance(dataset, CUBDataset) and len(dataset) == 6 and len(dataset.classes) == 3
    assert dataset.root.parent == tmp_path / "cache" / "synthetic-birds"
    assert dataset[0].image.shape == (96, 96, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached dataset was generated again")

    monkeypatch.setattr(synthetic_plugin, "write_synthetic_birds", refuse)
    again = xaikit.create("dataset", "synthetic-birds", classes=3, per_class=4, size=96, seed=5)
    assert again.root == dataset.root and len(again) == 12
    assert again[0].size == CUBDataset(again.root, crop_to_bbox=True)[0].size != (96, 96)  # cropped by default


def test_synthetic_birds_into_an_explicit_root(tmp_path):
    dataset = xaikit.create("dataset", "synthetic-birds", root=tmp_path / "birds", classes=2, per_class=2, size=64, crop_to_bbox=True)
    assert dataset.root == tmp_path / "birds" and (tmp_path / "birds" / "images.txt").exists()
    sample = dataset[0]
    assert sample.image.shape[:2] == sample.part_mask.shape


def test_cub_by_name_on_real_photographs(cub_mini):
    dataset = xaikit.create("dataset", "cub", root=cub_mini, split="test")
    assert len(dataset) == 30 and dataset.split_name == "test"


def test_cub_needs_a_root():
    with pytest.raises(xaikit.UnknownOptionError, match="dataset 'cub' needs the option 'root'"):
        xaikit.create("dataset", "cub")


def test_generating_synthetic_birds_says_so_once(tmp_path, capsys):
    import xaikit

    xaikit.create("dataset", "synthetic-birds", root=tmp_path / "birds", classes=2, per_class=2, size=64)
    assert "generating synthetic-birds (4 images of 64 px)" in capsys.readouterr().err
    xaikit.create("dataset", "synthetic-birds", root=tmp_path / "birds", classes=2, per_class=2, size=64)
    assert "generating" not in capsys.readouterr().err
