"""One conformance test for every segmenter: what each PartMap must satisfy, on real CUB photographs.

Runs ``annotations`` (the photographs are annotated), ``dino-parts`` (demo-vit) and ``clipseg`` (a
tiny model saved and loaded back) everywhere; ``vlpart``, ``san`` and ``ov-parts`` where detectron2
and their checkouts are installed (see their own tests for the environment variables).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.interfaces import Segmenter

_spec = importlib.util.spec_from_file_location("tiny_clipseg", Path(__file__).with_name("tiny_clipseg.py"))
tiny_clipseg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_clipseg)


def installed(name: str, variables: tuple[str, str], **options) -> Callable[[Path], Segmenter]:
    """A builder for a user-installed segmenter whose source and weights come from environment variables."""

    def build(_: Path) -> Segmenter:
        pytest.importorskip("detectron2", reason=f"detectron2 is not installed ({name} needs it)")
        source, weights = (os.environ.get(variable) for variable in variables)
        if not source or not weights:
            pytest.skip(f"set {' and '.join(variables)} to run {name}")
        return xaikit.create("segmenter", name, source=source, weights=weights, **options)

    return build


def clipseg(tmp: Path) -> Segmenter:
    tiny_clipseg.save_tiny_clipseg(tmp / "clipseg")
    return xaikit.create("segmenter", "clipseg", model=str(tmp / "clipseg"), device="cpu", threshold=0.5)


BUILDERS: dict[str, Callable[[Path], Segmenter]] = {
    "annotations": lambda _: xaikit.create("segmenter", "annotations"),
    "dino-parts": lambda _: xaikit.create("segmenter", "dino-parts", device="cpu", cache=False),
    "clipseg": clipseg,
    "vlpart": installed("vlpart", ("XAIKIT_VLPART_SOURCE", "XAIKIT_VLPART_WEIGHTS")),
    "san": installed("san", ("XAIKIT_SAN_SOURCE", "XAIKIT_SAN_WEIGHTS")),
    "ov-parts": installed("ov-parts", ("XAIKIT_OV_PARTS_SOURCE", "XAIKIT_OV_PARTS_WEIGHTS")),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_segmenter_conformance(name, cub_mini, tmp_path):
    segmenter = BUILDERS[name](tmp_path)
    assert isinstance(segmenter, Segmenter)
    dataset = CUBDataset(cub_mini)
    samples = [dataset[index] for index in (0, 12, 45)]
    maps = segmenter.segment(samples)
    assert len(maps) == len(samples)
    for part_map, sample in zip(maps, samples):
        labels = part_map.labels
        assert labels.shape == sample.size and labels.dtype == torch.int64 and labels.device.type == "cpu"
        assert labels.min() >= 0  # 0 is background, parts are positive
        assert set(part_map.present().tolist()) <= set(part_map.names)  # a name for every label present
        assert 0 not in part_map.names and set(part_map.names.values()) <= set(segmenter.vocabulary)
        if part_map.scores is not None:
            assert part_map.scores.shape == sample.size and part_map.scores.is_floating_point()
    again = segmenter.segment(samples)
    assert all(torch.equal(a.labels, b.labels) and a.names == b.names for a, b in zip(maps, again))
    assert segmenter.segment([]) == []
    fingerprint = segmenter.fingerprint
    assert fingerprint is None or (isinstance(fingerprint, str) and fingerprint == segmenter.fingerprint)
