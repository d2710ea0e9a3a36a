"""The ``grid`` segmenter: every image cut into a regular grid of labelled cells."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import xaikit


class GridSegmenter(xaikit.Segmenter):
    """Splits each image into ``rows x cols`` equal cells, labelled row by row from 1.

    Args:
        rows: number of cell rows.
        cols: number of cell columns.
    """

    def __init__(self, rows: int = 2, cols: int = 2) -> None:
        if rows < 1 or cols < 1:
            raise xaikit.XaikitError(f"grid needs at least one row and one column, got {rows}x{cols}")
        self.rows, self.cols = rows, cols
        self.vocabulary = tuple(f"cell {r},{c}" for r in range(rows) for c in range(cols))

    def segment(self, samples: Sequence[xaikit.Sample]) -> list[xaikit.PartMap]:
        names = {index + 1: name for index, name in enumerate(self.vocabulary)}
        maps = []
        for sample in samples:
            height, width = sample.size
            row = torch.arange(height) * self.rows // height  # (H,) cell row of each pixel row
            col = torch.arange(width) * self.cols // width  # (W,) cell column of each pixel column
            labels = row[:, None] * self.cols + col[None, :] + 1  # (H, W), 1-based
            maps.append(xaikit.PartMap(labels=labels, names=names))
        return maps
