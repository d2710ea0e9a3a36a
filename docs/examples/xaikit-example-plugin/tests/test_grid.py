"""Tests of the example plugin, run after `pip install .` in this directory."""

import numpy as np

import xaikit
from xaikit.testing import SegmenterContract


class TestGridSegmenter(SegmenterContract):
    """Every check xaikit asks of a segmenter, run on ``grid``; ``registered_name`` checks the entry point too."""

    registered_name = "grid"

    def make_segmenter(self):
        return xaikit.create("segmenter", "grid", rows=2, cols=3)


def test_grid_cells_are_labelled_row_by_row():
    segmenter = xaikit.create("segmenter", "grid", rows=2, cols=3)
    (part_map,) = segmenter.segment([xaikit.Sample(image=np.zeros((4, 6, 3), np.uint8))])
    assert part_map.labels.tolist() == [[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]]
