"""Draw a KLC explanation the way Figure 2 of the KLC paper does.

The query sits on the left and its ``k`` retrieved prototypes follow in rank order, every panel
resized to the same height. Each matched part pair is joined by a line from the query keypoint to the
prototype keypoint, coloured by the query part and labelled with the part name at both ends.
Unmatched parts get small grey hollow markers and grey names; when part maps are given, their pixel
regions are dimmed towards grey so the matched parts stand out.

Figure layout (all in output pixels): a white title band of :data:`HEADER_HEIGHT` rows, then the
panels (``height`` rows) side by side with :data:`GAP` columns between neighbours and none at the
outer edges, then, only when the prediction fell back to the nearest prototype, a
:data:`FOOTER_HEIGHT`-row band saying so under the query.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from xaikit.io import write_png_atomically

__all__ = [
    "FALLBACK_TEXT",
    "FOOTER_HEIGHT",
    "GAP",
    "HEADER_HEIGHT",
    "PALETTE",
    "UNMATCHED_GREY",
    "part_colour",
    "render_explanation",
    "save_explanation",
]

Colour = tuple[int, int, int]
Point = tuple[float, float]
_Entry = Mapping[str, Any]
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

GAP = 8
"""White columns between neighbouring panels."""
HEADER_HEIGHT = 40
"""Rows of the title band above the panels (two lines of text)."""
FOOTER_HEIGHT = 22
"""Rows of the band under the panels, present only for a fallback prediction."""
FALLBACK_TEXT = "no matched parts: predicted from the nearest prototype"

PALETTE: tuple[Colour, ...] = (
    (243, 195, 0),  # Kelly's colours of maximum contrast, without white, black and grey
    (135, 86, 146),
    (243, 132, 0),
    (161, 202, 241),
    (190, 0, 50),
    (194, 178, 128),
    (0, 136, 86),
    (230, 143, 172),
    (0, 103, 165),
    (249, 147, 121),
    (96, 78, 151),
    (246, 166, 0),
    (179, 68, 108),
    (220, 211, 0),
    (136, 45, 23),
    (141, 182, 0),
    (101, 69, 34),
    (226, 88, 34),
    (43, 61, 38),
)
"""Qualitative palette for matched parts; part label ``l`` always gets ``PALETTE[(l - 1) % len(PALETTE)]``."""
UNMATCHED_GREY: Colour = (150, 150, 150)
"""Colour of unmatched parts' markers and names."""

_WHITE: Colour = (255, 255, 255)
_INK: Colour = (20, 20, 20)
_RIGHT: Colour = (0, 120, 40)
_WRONG: Colour = (190, 0, 30)
_LABEL_BOX: Colour = (24, 24, 24)
_DIM_TARGET = 128.0
_DIM_STRENGTH = 0.6
_LINE_HEIGHT = 17
_TITLE_FONT = 13
_PART_FONT = 12
_SMALL_FONT = 11
_LINE_WIDTH = 2
_MARKER_RADIUS = 5
_UNMATCHED_RADIUS = 3


@dataclass(frozen=True)
class _Panel:
    """Where one resized image lies in the figure and how its pixel coordinates scale."""

    left: int
    width: int
    scale_x: float
    scale_y: float

    def to_figure(self, point: Point) -> Point:
        """Map a continuous ``(x, y)`` image coordinate to the Pillow pixel coordinate in the figure.

        Pillow addresses pixel ``(i, j)`` at ``(j, i)`` while the image convention puts that pixel's
        centre at ``(j + 0.5, i + 0.5)``, hence the half-pixel shift.
        """
        return self.left + point[0] * self.scale_x - 0.5, HEADER_HEIGHT + point[1] * self.scale_y - 0.5


def part_colour(label: int) -> Colour:
    """The palette colour of part ``label`` (stable across figures)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def render_explanation(
    query: np.ndarray,
    prototypes: Sequence[np.ndarray],
    detail: Mapping[str, Any],
    *,
    query_labels: torch.Tensor | None = None,
    prototype_labels: Sequence[torch.Tensor | None] | None = None,
    height: int = 320,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw the query, its prototypes and the matched parts between them.

    Args:
        query: the query image, ``(H, W, 3)`` ``uint8`` RGB.
        prototypes: the ``k >= 1`` retrieved prototype images in rank order, any sizes.
        detail: the KLC explainer's detail dict for this query (prediction, label, fallback,
            prototypes, query_parts, prototype_parts, matches).
        query_labels: the query's ``(H, W)`` part map (0 = background). When given, every part
            region whose label is not that of a matched query part is dimmed towards grey.
        prototype_labels: one ``(H_j, W_j)`` part map or ``None`` per prototype, dimmed likewise.
        height: height of every panel in pixels; widths keep each image's aspect ratio.
        class_names: class index -> name for titles; indices are shown when absent.

    Returns:
        The figure, ``(HEADER_HEIGHT + height [+ FOOTER_HEIGHT], sum of panel widths + k * GAP, 3)``
        ``uint8``; the footer band is there only when ``detail["fallback"]`` is true.

    Raises:
        ValueError: when images, part maps and ``detail`` disagree with each other.
    """
    images = [_check_image("the query", query)]
    images += [_check_image(f"prototype {j}", image) for j, image in enumerate(prototypes)]
    k = len(images) - 1
    if k < 1:
        raise ValueError("render_explanation needs at least one prototype image.")
    if height < 1:
        raise ValueError(f"The panel height must be positive, got {height}.")
    entries, parts, matches = _check_detail(detail, k)
    prototype_maps = [None] * k if prototype_labels is None else list(prototype_labels)
    maps = _check_maps(images, [query_labels, *prototype_maps], k)

    matched = _matched_indices(matches, k)
    panels = _layout(images, height)
    fallback = bool(detail.get("fallback", False))
    size = (panels[-1].left + panels[-1].width, HEADER_HEIGHT + height + (FOOTER_HEIGHT if fallback else 0))
    figure = Image.new("RGB", size, _WHITE)
    for image, labels, panel_parts, used, panel in zip(images, maps, parts, matched, panels):
        kept = {int(panel_parts[i]["label"]) for i in used}
        shown = Image.fromarray(image if labels is None else _dim_unmatched(image, labels, kept))
        figure.paste(shown.resize((panel.width, height), Image.Resampling.BILINEAR), (panel.left, HEADER_HEIGHT))

    draw = ImageDraw.Draw(figure)
    _draw_titles(draw, detail, entries, panels, class_names)
    points = [[_figure_point(part, panel) for part in panel_parts] for panel_parts, panel in zip(parts, panels)]
    _draw_matches(draw, figure.size, matches, parts, points, matched)
    if fallback:
        footer = (3, HEADER_HEIGHT + height + 3)
        _draw_text(draw, footer, FALLBACK_TEXT, _font(_TITLE_FONT), figure.width - 6, _WRONG)
    return np.array(figure)


def save_explanation(path: str | os.PathLike[str], figure: np.ndarray) -> None:
    """Write ``figure`` (``(H, W, 3)`` ``uint8``) to ``path`` as a PNG, atomically (see :mod:`xaikit.io`)."""
    write_png_atomically(path, _check_image("the figure", np.asarray(figure)))


def _check_image(what: str, image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is ``(H, W, 3)`` ``uint8`` with at least one pixel, else raise."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"{what.capitalize()} must be a non-empty (H, W, 3) uint8 image, got {image.shape} {image.dtype}."
        )
    return image


def _field(detail: Mapping[str, Any], key: str) -> Any:
    """``detail[key]``, or a ValueError naming the missing key."""
    if key not in detail:
        raise ValueError(f"The KLC detail dict has no {key!r} entry.")
    return detail[key]


def _check_detail(detail: Mapping[str, Any], k: int) -> tuple[list[_Entry], list[list[_Entry]], list[_Entry]]:
    """Check ``detail`` against ``k`` prototype images; return its prototypes, parts per panel and matches."""
    entries = list(_field(detail, "prototypes"))
    prototype_parts = [list(parts) for parts in _field(detail, "prototype_parts")]
    parts = [list(_field(detail, "query_parts")), *prototype_parts]
    matches = list(_field(detail, "matches"))
    for key, count in (("prototypes", len(entries)), ("prototype_parts", len(prototype_parts))):
        if count != k:
            raise ValueError(f"The detail's {key!r} has {count} entries but {k} prototype images were given.")
    for number, match in enumerate(matches):
        _check_match(number, match, parts)
    return entries, parts, matches


def _check_match(number: int, match: _Entry, parts: list[list[_Entry]]) -> None:
    """Raise unless the indices of match ``number`` point at existing parts and prototypes."""
    try:
        query_part, prototype, prototype_part = _match_indices(match)
    except (KeyError, TypeError, ValueError):
        keys = "'query_part', 'prototype' and 'prototype_part'"
        raise ValueError(f"Match {number} needs integer {keys} entries.") from None
    if not 0 <= query_part < len(parts[0]):
        count = len(parts[0])
        raise ValueError(f"Match {number} names query part {query_part} but there are {count} query parts.")
    if not 0 <= prototype < len(parts) - 1:
        raise ValueError(f"Match {number} names prototype {prototype} but there are {len(parts) - 1} prototypes.")
    if not 0 <= prototype_part < len(parts[prototype + 1]):
        count = len(parts[prototype + 1])
        raise ValueError(
            f"Match {number} names part {prototype_part} of prototype {prototype}, which has {count} parts."
        )


def _match_indices(match: _Entry) -> tuple[int, int, int]:
    """``(query_part, prototype, prototype_part)`` of one match."""
    return int(match["query_part"]), int(match["prototype"]), int(match["prototype_part"])


def _check_maps(images: list[np.ndarray], maps: list[torch.Tensor | None], k: int) -> list[np.ndarray | None]:
    """Check one optional part map per image (query first) and return them as NumPy arrays."""
    if len(maps) != k + 1:
        raise ValueError(f"{len(maps) - 1} prototype part maps were given for {k} prototype images.")
    checked: list[np.ndarray | None] = []
    for index, (image, labels) in enumerate(zip(images, maps)):
        if labels is not None and tuple(labels.shape) != image.shape[:2]:
            what = "the query" if index == 0 else f"prototype {index - 1}"
            shape = tuple(labels.shape)
            raise ValueError(f"The part map of {what} is {shape} but its image is {image.shape[:2]}.")
        checked.append(None if labels is None else labels.detach().cpu().numpy())
    return checked


def _matched_indices(matches: list[_Entry], k: int) -> list[set[int]]:
    """Indices of the matched parts per panel (query first)."""
    matched: list[set[int]] = [set() for _ in range(k + 1)]
    for match in matches:
        query_part, prototype, prototype_part = _match_indices(match)
        matched[0].add(query_part)
        matched[prototype + 1].add(prototype_part)
    return matched


def _layout(images: list[np.ndarray], height: int) -> list[_Panel]:
    """Place the panels left to right at ``height`` rows, keeping aspect ratios, ``GAP`` apart."""
    panels: list[_Panel] = []
    left = 0
    for image in images:
        rows, cols = image.shape[:2]
        width = max(1, round(cols * height / rows))
        panels.append(_Panel(left=left, width=width, scale_x=width / cols, scale_y=height / rows))
        left += width + GAP
    return panels


def _dim_unmatched(image: np.ndarray, labels: np.ndarray, kept: set[int]) -> np.ndarray:
    """Blend every part pixel whose label is not in ``kept`` towards grey; background and kept parts stay."""
    dim = (labels != 0) & ~np.isin(labels, sorted(kept))
    out = image.copy()
    out[dim] = np.rint(image[dim] * (1.0 - _DIM_STRENGTH) + _DIM_TARGET * _DIM_STRENGTH).astype(np.uint8)
    return out


def _figure_point(part: _Entry, panel: _Panel) -> Point | None:
    """The part's keypoint in figure coordinates, or ``None`` when it is missing or not finite."""
    keypoint = part.get("keypoint")
    if keypoint is None:
        return None
    x, y = (float(value) for value in keypoint)
    return panel.to_figure((x, y)) if math.isfinite(x) and math.isfinite(y) else None


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``index``, or the index itself when no name is known."""
    return str(class_names[index]) if class_names is not None and 0 <= index < len(class_names) else str(index)


def _draw_titles(
    draw: ImageDraw.ImageDraw,
    detail: Mapping[str, Any],
    entries: list[_Entry],
    panels: list[_Panel],
    class_names: Sequence[str] | None,
) -> None:
    """Write the query's title and verdict and each prototype's rank, class and similarity above its panel."""
    font = _font(_TITLE_FONT)
    prediction, label = int(_field(detail, "prediction")), int(detail.get("label", -1))
    verdict, colour = "", _INK
    if label >= 0:
        right = prediction == label
        verdict = "  (right)" if right else f"  (wrong, true: {_class_name(label, class_names)})"
        colour = _RIGHT if right else _WRONG
    query = panels[0]
    _draw_text(draw, (query.left + 2, 3), "query", font, query.width - 2, _INK)
    predicted = f"pred: {_class_name(prediction, class_names)}{verdict}"
    _draw_text(draw, (query.left + 2, 3 + _LINE_HEIGHT), predicted, font, query.width - 2, colour)
    for rank, (entry, panel) in enumerate(zip(entries, panels[1:]), start=1):
        title = f"#{rank}  {_class_name(int(entry['label']), class_names)}  sim {float(entry['similarity']):.2f}"
        _draw_text(draw, (panel.left + 2, 3), title, font, panel.width - 2, _INK)


def _draw_matches(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    matches: list[_Entry],
    parts: list[list[_Entry]],
    points: list[list[Point | None]],
    matched: list[set[int]],
) -> None:
    """Draw the unmatched parts in grey, then every match's line, then matched markers and names on top."""
    small = _font(_SMALL_FONT)
    for panel_parts, panel_points, used in zip(parts, points, matched):
        for index, (part, point) in enumerate(zip(panel_parts, panel_points)):
            if index not in used and point is not None:
                _draw_marker(draw, point, _UNMATCHED_RADIUS, None, UNMATCHED_GREY)
                _draw_label(draw, size, point, str(part["name"]), small, (UNMATCHED_GREY, None))
    ends: dict[tuple[int, int], Colour] = {}
    for match in matches:
        query_part, prototype, prototype_part = _match_indices(match)
        colour = part_colour(parts[0][query_part]["label"])
        start, end = points[0][query_part], points[prototype + 1][prototype_part]
        if start is not None and end is not None:
            draw.line([start, end], fill=colour, width=_LINE_WIDTH)
        ends.setdefault((0, query_part), colour)
        ends.setdefault((prototype + 1, prototype_part), colour)
    _draw_ends(draw, size, ends, parts, points)


def _draw_ends(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    ends: dict[tuple[int, int], Colour],
    parts: list[list[_Entry]],
    points: list[list[Point | None]],
) -> None:
    """Filled markers, then names, at every matched part ``(panel, part index)`` in its match colour."""
    located = [(points[panel][index], parts[panel][index], colour) for (panel, index), colour in ends.items()]
    located = [(point, part, colour) for point, part, colour in located if point is not None]
    for point, _, colour in located:
        _draw_marker(draw, point, _MARKER_RADIUS, colour, _LABEL_BOX)
    font = _font(_PART_FONT)
    for point, part, colour in located:
        _draw_label(draw, size, point, str(part["name"]), font, (_lighten(colour), colour))


def _draw_marker(
    draw: ImageDraw.ImageDraw, point: Point, radius: int, fill: Colour | None, outline: Colour
) -> None:
    """A circle of ``radius`` pixels at ``point``, filled unless ``fill`` is ``None``."""
    x, y = point
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=outline, width=1)


def _draw_label(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    point: Point,
    text: str,
    font: _Font,
    colours: tuple[Colour, Colour | None],
) -> None:
    """Write ``text`` on a dark box just above and right of ``point``, kept inside a figure of ``size``.

    ``colours`` are the text colour and the box's border colour (``None``: no border).
    """
    colour, border = colours
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    box_width, box_height = right - left + 4, bottom - top + 4
    width, height = size
    x = min(max(point[0] + _MARKER_RADIUS + 2, 0), width - box_width - 1)
    y = min(max(point[1] - _MARKER_RADIUS - 2 - box_height, 0), height - box_height - 1)
    draw.rectangle([x, y, x + box_width, y + box_height], fill=_LABEL_BOX, outline=border)
    draw.text((x + 2 - left, y + 2 - top), text, font=font, fill=colour)


def _draw_text(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: _Font, width: int, colour: Colour
) -> None:
    """Write ``text`` at ``xy``, shortened to fit in ``width`` pixels where it can be."""
    draw.text(xy, _shorten(draw, text, font, width), font=font, fill=colour)


def _shorten(draw: ImageDraw.ImageDraw, text: str, font: _Font, width: int) -> str:
    """``text``, or its longest prefix that fits ``width`` pixels plus "...", but at least its first word."""
    if draw.textlength(text, font=font) <= width:
        return text
    first = text.split(" ", 1)[0]
    for end in range(len(text) - 1, len(first) - 1, -1):
        candidate = f"{text[:end].rstrip()}..."
        if draw.textlength(candidate, font=font) <= width:
            return candidate
    return first


def _lighten(colour: Colour) -> Colour:
    """``colour`` blended 35% towards white, readable on the dark label box."""
    red, green, blue = (round(channel + (255 - channel) * 0.35) for channel in colour)
    return red, green, blue


@functools.lru_cache(maxsize=None)
def _font(size: int) -> _Font:
    """Pillow's default font at ``size`` points, or its fixed bitmap font when that cannot be scaled."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 takes no size; no FreeType cannot scale
        return ImageFont.load_default()
