"""Tests of the plugin: run them with `pytest` after `pip install -e .` in this directory."""

import numpy as np
import pytest

import xaikit
from xaikit.testing import SegmenterContract, tiny_samples


class TestCentreSegmenter(SegmenterContract):
    """xaikit's segmenter contract: shapes, background, names, determinism, and the registration."""

    registered_name = "centre"  # checks that the installed plugin registers it under this name

    def make_segmenter(self):
        return xaikit.create("segmenter", "centre", fraction=0.5)


def test_the_central_half_is_the_part():
    segmenter = xaikit.create("segmenter", "centre", fraction=0.5)
    (part_map,) = segmenter.segment([xaikit.Sample(image=np.zeros((4, 8, 3), np.uint8))])
    assert part_map.labels.tolist() == [[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]
    assert part_map.names == {1: "centre"}


def test_every_image_keeps_a_centre():
    segmenter = xaikit.create("segmenter", "centre", fraction=0.01)
    for part_map in segmenter.segment(tiny_samples(2, size=(17, 30))):
        assert part_map.present().tolist() == [1]


def test_a_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(xaikit.XaikitError, match="fraction"):
        xaikit.create("segmenter", "centre", fraction=1.5)
