"""Subset: a reordered selection of a dataset's samples."""

from __future__ import annotations

import pytest

import xaikit
from xaikit.errors import XaikitError


def test_subset_selects_in_order(tiny_birds):
    test = xaikit.CUBDataset(tiny_birds, split="test")
    subset = xaikit.Subset(test, [5, 0, 5])
    assert len(subset) == 3 and subset.classes == test.classes and subset.part_names == test.part_names
    assert subset.labels.tolist() == [test.labels[5], test.labels[0], test.labels[5]]
    assert subset[1].image_id == test[0].image_id
    assert subset.split("all") is subset
    with pytest.raises(XaikitError, match="cannot be split"):
        subset.split("train")
    with pytest.raises(IndexError):
        xaikit.Subset(test, [len(test)])
