"""Text on figures that is never cut off and never collides: fonts, wrapping, label placement, placed boxes.

The built-in figures (KLC's and IVPT's) write every piece of text through a :class:`Canvas`, which
records the box each one covers. The finished :class:`Figure` carries those boxes beside the pixels, so
that a test can check a layout (every box inside the canvas, no two overlapping) and so that later
labels are placed around earlier text. :func:`place_labels` puts labels next to their anchor points
greedily, in priority order, at the first free spot of a ring of candidates; a label with no free spot
is left out and its caller lists it elsewhere (a legend line).

All coordinates are figure pixels, ``x`` to the right and ``y`` down. A :class:`Box` is half-open:
it covers ``left <= x < right`` and ``top <= y < bottom``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "INK",
    "RIGHT",
    "WRONG",
    "Box",
    "Canvas",
    "Figure",
    "TextBox",
    "font",
    "label_size",
    "line_height",
    "place_labels",
    "readable_class_name",
    "text_width",
    "verdict_lines",
    "wrap",
]

Colour = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

INK: Colour = (20, 20, 20)
"""Colour of plain text."""
RIGHT: Colour = (0, 120, 40)
"""Colour of a correct prediction's verdict."""
WRONG: Colour = (190, 0, 30)
"""Colour of a wrong prediction's verdict and of warnings."""

_LINE_SPACING = 4
_LABEL_PAD = 2
_DIRECTIONS = np.array([(1, -1), (1, 1), (-1, -1), (-1, 1), (1, 0), (-1, 0), (0, -1), (0, 1)], np.float64)
"""Candidate directions from an anchor, in order of preference: above right first (``y`` grows down)."""


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle ``[left, right) x [top, bottom)``."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def overlaps(self, other: Box) -> bool:
        """Whether the two boxes share any area (touching edges do not count)."""
        return self.left < other.right and other.left < self.right and self.top < other.bottom and other.top < self.bottom

    def inside(self, outer: Box) -> bool:
        """Whether this box lies entirely within ``outer``."""
        return outer.left <= self.left and outer.top <= self.top and self.right <= outer.right and self.bottom <= outer.bottom


@dataclass(frozen=True)
class TextBox:
    """One piece of text on a figure and the box it covers (its label box, or its ink)."""

    text: str
    box: Box


@dataclass(frozen=True)
class Figure:
    """A drawn figure and its layout.

    Attributes:
        image: the pixels, ``(H, W, 3)`` ``uint8`` RGB.
        texts: every piece of text written, with the box it covers.
        regions: named areas of the figure (panels, charts), e.g. ``"query 1"`` -> its box.
    """

    image: np.ndarray
    texts: tuple[TextBox, ...]
    regions: Mapping[str, Box] = field(default_factory=dict)

    @property
    def bounds(self) -> Box:
        """The whole canvas."""
        return Box(0, 0, self.image.shape[1], self.image.shape[0])

    def problems(self) -> list[str]:
        """What is wrong with the layout: every text not wholly inside the canvas, every pair of overlapping texts.

        Returns:
            One line per problem; empty for a clean layout.
        """
        corners = np.array([[t.box.left, t.box.top, t.box.right, t.box.bottom] for t in self.texts], np.float64).reshape(-1, 4)
        height, width = self.image.shape[:2]
        outside = (corners[:, 0] < 0) | (corners[:, 1] < 0) | (corners[:, 2] > width) | (corners[:, 3] > height)
        overlap = (
            (corners[:, None, 0] < corners[None, :, 2]) & (corners[None, :, 0] < corners[:, None, 2])
            & (corners[:, None, 1] < corners[None, :, 3]) & (corners[None, :, 1] < corners[:, None, 3])
        )
        first, second = np.nonzero(np.triu(overlap, k=1))
        return [f"{self.texts[i].text!r} at {self.texts[i].box} lies outside the {width}x{height} canvas" for i in np.flatnonzero(outside)] + [
            f"{self.texts[i].text!r} at {self.texts[i].box} overlaps {self.texts[j].text!r} at {self.texts[j].box}"
            for i, j in zip(first.tolist(), second.tolist())
        ]


@functools.lru_cache(maxsize=None)
def font(size: int) -> Font:
    """Pillow's default font at ``size`` points, or its fixed bitmap font when that cannot be scaled."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 takes no size; no FreeType cannot scale
        return ImageFont.load_default()


def line_height(typeface: Font) -> int:
    """Rows from one line of ``typeface`` to the next: its tallest glyphs plus a little spacing."""
    _, top, _, bottom = typeface.getbbox("Ag|")
    return int(bottom - min(top, 0)) + _LINE_SPACING


def text_width(text: str, typeface: Font) -> int:
    """Columns ``text`` advances in ``typeface``, rounded up."""
    return int(np.ceil(typeface.getlength(text)))


def label_size(text: str, typeface: Font) -> tuple[int, int]:
    """``(width, height)`` of the label box :meth:`Canvas.label` draws for ``text``: its ink plus a 2-pixel pad a side."""
    left, top, right, bottom = typeface.getbbox(text)
    return int(np.ceil(right - left)) + 2 * _LABEL_PAD, int(np.ceil(bottom - top)) + 2 * _LABEL_PAD


def wrap(text: str, typeface: Font, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels, at spaces where it can be.

    A word wider than ``width`` on its own is broken between characters; nothing is dropped, so
    ``"".join`` of the lines equals ``text`` without the spaces the breaks replaced.
    """
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and text_width(candidate, typeface) <= width:
            lines[-1] = candidate
            continue
        lines.extend(_break_word(word, typeface, width))
    return lines or [""]


def _break_word(word: str, typeface: Font, width: float) -> list[str]:
    """``word`` cut into pieces no wider than ``width`` (at least one character each)."""
    pieces: list[str] = []
    while word:
        end = len(word)
        while end > 1 and text_width(word[:end], typeface) > width:
            end -= 1
        pieces.append(word[:end])
        word = word[end:]
    return pieces


def readable_class_name(name: str) -> str:
    """A class name as a caption shows it: CUB's ``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    readable = re.sub(r"^\d+\.", "", str(name)).replace("_", " ").strip()
    return readable or str(name)


def verdict_lines(predicted: str, true: str | None) -> list[tuple[str, Colour]]:
    """The lines that state a prediction: ``true: ...`` (when known), then ``predicted: ... · correct | wrong``.

    Returns:
        ``(text, colour)`` per line: the prediction line is :data:`RIGHT` or :data:`WRONG` when the
        true class is known, :data:`INK` otherwise.
    """
    if true is None:
        return [(f"predicted: {predicted}", INK)]
    right = predicted == true
    return [(f"true: {true}", INK), (f"predicted: {predicted} · {'correct' if right else 'wrong'}", RIGHT if right else WRONG)]


class Canvas:
    """A Pillow drawing that records the box of every text it writes.

    Args:
        image: the figure to draw on (modified in place).
    """

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.texts: list[TextBox] = []
        self.regions: dict[str, Box] = {}

    def text(self, xy: tuple[float, float], text: str, typeface: Font, colour: Colour) -> Box:
        """Write one line with its top left corner at ``xy``; returns (and records) its ink box."""
        left, top, right, bottom = self.draw.textbbox(xy, text, font=typeface)
        self.draw.text(xy, text, font=typeface, fill=colour)
        box = Box(left, top, right, bottom)
        if text.strip():
            self.texts.append(TextBox(text, box))
        return box

    def paragraph(self, xy: tuple[float, float], lines: Sequence[str], typeface: Font, colour: Colour) -> float:
        """Write ``lines`` one under another from ``xy``; returns the ``y`` just under the last line."""
        x, y = xy
        step = line_height(typeface)
        for line in lines:
            self.text((x, y), line, typeface, colour)
            y += step
        return y

    def label(self, box: Box, text: str, typeface: Font, colours: tuple[Colour, Colour, Colour | None]) -> None:
        """A filled label ``box`` (of :func:`label_size`) holding ``text``; ``colours`` are text, fill and border (``None``: none)."""
        colour, fill, border = colours
        self.draw.rectangle([box.left, box.top, box.right - 1, box.bottom - 1], fill=fill, outline=border)
        left, top, _, _ = typeface.getbbox(text)
        self.draw.text((box.left + _LABEL_PAD - left, box.top + _LABEL_PAD - top), text, font=typeface, fill=colour)
        self.texts.append(TextBox(text, box))

    def figure(self) -> Figure:
        """The finished :class:`Figure`: pixels, texts and regions."""
        return Figure(np.array(self.image), tuple(self.texts), dict(self.regions))


def place_labels(
    anchors: np.ndarray,
    sizes: np.ndarray,
    bounds: Box,
    taken: Sequence[Box],
    clearance: float,
    rings: Sequence[float] = (0.0, 8.0, 18.0, 30.0),
) -> list[Box | None]:
    """Greedy label placement with collision avoidance.

    Each label in turn (the order is the priority) takes the first of its candidate boxes that lies
    inside ``bounds`` and overlaps neither ``taken`` nor a label placed before it. Its candidates sit
    in eight directions around the anchor (above right first), on rings ``clearance + ring`` pixels
    away.

    Args:
        anchors: ``(N, 2)`` float ``(x, y)`` points the labels belong to.
        sizes: ``(N, 2)`` ``(width, height)`` of each label box.
        bounds: the area every label must stay in.
        taken: boxes no label may overlap (earlier text, markers).
        clearance: gap between an anchor and its nearest candidates (at least the marker's radius).
        rings: extra distances of the candidate rings, nearest first.

    Returns:
        One integer-cornered :class:`Box` per label, or ``None`` for a label that found no free spot.
    """
    occupied = np.array([[box.left, box.top, box.right, box.bottom] for box in taken], np.float64).reshape(-1, 4)
    placed: list[Box | None] = []
    for anchor, size in zip(np.asarray(anchors, np.float64), np.asarray(sizes, np.float64)):
        candidates = _candidates(anchor, size, clearance + np.asarray(rings, np.float64))
        inside = (
            (candidates[:, 0] >= bounds.left) & (candidates[:, 1] >= bounds.top)
            & (candidates[:, 2] <= bounds.right) & (candidates[:, 3] <= bounds.bottom)
        )
        collides = (
            (candidates[:, None, 0] < occupied[None, :, 2]) & (occupied[None, :, 0] < candidates[:, None, 2])
            & (candidates[:, None, 1] < occupied[None, :, 3]) & (occupied[None, :, 1] < candidates[:, None, 3])
        ).any(axis=1)
        free = np.flatnonzero(inside & ~collides)
        if not len(free):
            placed.append(None)
            continue
        chosen = candidates[free[0]]
        occupied = np.vstack([occupied, chosen])
        placed.append(Box(*(float(value) for value in chosen)))
    return placed


def _candidates(anchor: np.ndarray, size: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """``(R * 8, 4)`` integer-cornered boxes of ``size`` around ``anchor``, ring by ring, in :data:`_DIRECTIONS` order.

    In a direction with ``dx > 0`` the box's left edge is ``distance`` right of the anchor, with
    ``dx < 0`` its right edge as far left, with ``dx == 0`` it is centred on the anchor; likewise in ``y``.
    """
    steps = _DIRECTIONS[None, :, :] * distances[:, None, None]  # (R, 8, 2)
    offset = np.where(_DIRECTIONS > 0, 0.0, np.where(_DIRECTIONS < 0, -size, -size / 2))  # (8, 2)
    corner = np.floor(anchor + steps + offset).reshape(-1, 2)
    return np.concatenate([corner, corner + size], axis=1)
