"""The ``centre`` segmenter: one part covering the central region of every image."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import xaikit


class CentreSegmenter(xaikit.Segmenter):
    """Labels the central ``fraction`` of each image's height and width as part 1, ``"centre"``.

    A baseline that assumes the object sits in the middle of the picture, as it does in many
    cropped datasets. Its constructor's keyword arguments are its options:
    ``xaikit.create("segmenter", "centre", fraction=0.6)``.

    Args:
        fraction: side of the central box as a fraction of the image's side, in ``(0, 1]``.

    Raises:
        XaikitError: when ``fraction`` is outside ``(0, 1]``.
    """

    vocabulary = ("centre",)

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0 < fraction <= 1:
            raise xaikit.XaikitError(f"fraction is the central box's share of each side, in (0, 1]; got {fraction}")
        self.fraction = float(fraction)

    @property
    def fingerprint(self) -> str:
        """The output depends only on the option and the image size, so callers may cache it under this key."""
        return f"centre-v1-{self.fraction}"

    def segment(self, samples: Sequence[xaikit.Sample]) -> list[xaikit.PartMap]:
        """One map per sample: 1 inside the central box (at least one pixel), 0 (background) around it."""
        return [xaikit.PartMap(labels=self._labels(*sample.size), names={1: "centre"}) for sample in samples]

    def _labels(self, height: int, width: int) -> torch.Tensor:
        rows, cols = self._span(height), self._span(width)
        inside = rows[:, None] & cols[None, :]  # (H, W)
        return inside.to(torch.int64)

    def _span(self, length: int) -> torch.Tensor:
        """Which of ``length`` pixels fall in the central ``fraction`` of them, ``(length,)`` bool."""
        margin = round(length * (1 - self.fraction) / 2)
        margin = min(margin, (length - 1) // 2)  # keep at least one pixel
        positions = torch.arange(length)
        return (positions >= margin) & (positions < length - margin)
