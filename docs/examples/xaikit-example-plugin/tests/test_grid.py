"""Tests of the example plugin, run after `pip install .` in this directory."""

import numpy as np

import xaikit


def test_grid_is_registered_and_builds():
    names = [c.name for c in xaikit.list_components("segmenter")]
    assert "grid" in names
    segmenter = xaikit.create("segmenter", "grid", rows=2, cols=3)
    (part_map,) = segmenter.segment([xaikit.Sample(image=np.zeros((4, 6, 3), np.uint8))])
    assert part_map.labels.tolist() == [[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]]
