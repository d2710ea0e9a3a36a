"""Draw a KLC explanation: the query beside each retrieved prototype, matched parts joined by lines.

Figure 2 of the KLC paper puts the query left of its ``k`` prototypes and joins matched part pairs by
lines. Here every prototype gets its own row, the query repeated on its left, so that no line runs
across another prototype: row ``i`` holds the query and prototype ``i`` (rank order), each resized to
``height`` rows, with the lines of their matches crossing only the gap between the two. A matched pair
is drawn in the colour of the query part, with a filled marker and the part's name at both ends;
unmatched parts get small grey hollow markers and grey names. When part maps are given, the regions of
parts that have no match in that row are dimmed towards grey.

Nothing is cut off and no two texts overlap: titles wrap onto more lines, and part names are placed
next to their markers by :func:`xaikit.figure_layout.place_labels` (inside their own panel, around
markers and earlier names); a name with no free spot is listed under its panel instead
(``unlabelled: ...``). :func:`draw_explanation` returns the pixels with every text box and panel, so
that tests can check the layout.

Figure layout (output pixels), top to bottom, all inside a :data:`MARGIN`-pixel white border: the
verdict (the true class when known, then the predicted one and whether it is correct, green or red;
for a fallback prediction a red line saying so); then per prototype, :data:`ROW_GAP` rows apart, a
title band (``query`` over the first row's query; ``#rank class · similarity · matched parts`` over
the prototype), the two panels :data:`GAP` columns apart, and the ``unlabelled`` captions when any.
The query column is as wide as the resized query, the prototype column as the widest resized
prototype.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from xaikit.figure_layout import (
    INK,
    WRONG,
    Box,
    Canvas,
    Figure,
    font,
    label_size,
    line_height,
    place_labels,
    readable_class_name,
    verdict_lines,
    wrap,
)
from xaikit.io import write_image_atomically

__all__ = [
    "FALLBACK_TEXT",
    "GAP",
    "MARGIN",
    "PALETTE",
    "ROW_GAP",
    "UNMATCHED_GREY",
    "draw_explanation",
    "part_colour",
    "save_explanation",
]

Colour = tuple[int, int, int]
Point = tuple[float, float]
_Entry = Mapping[str, Any]

MARGIN = 8
"""White border around the figure."""
GAP = 40
"""Columns between the query and the prototype of a row, crossed by the match lines."""
ROW_GAP = 18
"""Rows between one prototype's row and the next one's title."""
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
_LABEL_BOX: Colour = (24, 24, 24)
_CAPTION: Colour = (110, 110, 110)
_DIM_TARGET = 128.0
_DIM_STRENGTH = 0.6
_TITLE_FONT = 13
_PART_FONT = 12
_LINE_WIDTH = 2
_MARKER_RADIUS = 5
_UNMATCHED_RADIUS = 3


@dataclass(frozen=True)
class _Panel:
    """Where one resized image lies in the figure and how its pixel coordinates scale."""

    left: int
    top: int
    width: int
    height: int
    scale_x: float
    scale_y: float

    @property
    def box(self) -> Box:
        return Box(self.left, self.top, self.left + self.width, self.top + self.height)

    def to_figure(self, point: Point) -> Point:
        """Map a continuous ``(x, y)`` image coordinate to the Pillow pixel coordinate in the figure.

        Pillow addresses pixel ``(i, j)`` at ``(j, i)`` while the image convention puts that pixel's
        centre at ``(j + 0.5, i + 0.5)``, hence the half-pixel shift.
        """
        return self.left + point[0] * self.scale_x - 0.5, self.top + point[1] * self.scale_y - 0.5


@dataclass(frozen=True)
class _Mark:
    """One part drawn in a panel: its marker, its name and, when matched, its colour."""

    point: Point
    name: str
    colour: Colour | None  # None: unmatched


@dataclass(frozen=True)
class _Row:
    """Prototype ``rank``'s row: its panels, title, matched lines, marks and placed names."""

    rank: int
    title_top: int
    title: list[str]
    panels: tuple[_Panel, _Panel]
    lines: list[tuple[Point, Point, Colour]]
    marks: tuple[list[_Mark], list[_Mark]]
    kept: tuple[set[int], set[int]]
    labels: list[tuple[_Mark, Box]]
    captions: tuple[list[str], ...]  # the wrapped "unlabelled: ..." lines under each panel
    bottom: int


def part_colour(label: int) -> Colour:
    """The palette colour of part ``label`` (stable across figures)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def draw_explanation(
    query: np.ndarray,
    prototypes: Sequence[np.ndarray],
    detail: Mapping[str, Any],
    *,
    query_labels: torch.Tensor | None = None,
    prototype_labels: Sequence[torch.Tensor | None] | None = None,
    height: int = 280,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Draw the query beside each of its prototypes, with the matched parts between them.

    Args:
        query: the query image, ``(H, W, 3)`` ``uint8`` RGB.
        prototypes: the ``k >= 1`` retrieved prototype images in rank order, any sizes.
        detail: the KLC explainer's detail dict for this query (prediction, label, fallback,
            prototypes, query_parts, prototype_parts, matches).
        query_labels: the query's ``(H, W)`` part map (0 = background). When given, every part
            region without a match in a row is dimmed towards grey in that row.
        prototype_labels: one ``(H_j, W_j)`` part map or ``None`` per prototype, dimmed likewise.
        height: height of every panel in pixels; widths keep each image's aspect ratio.
        class_names: class index -> name for titles (shown readable: ``001.Black_footed_Albatross``
            as ``Black footed Albatross``); indices are shown when absent.

    Returns:
        The :class:`~xaikit.figure_layout.Figure`: pixels ``(H, W, 3)`` ``uint8`` with ``W = 2 *
        MARGIN + query width + GAP + widest prototype width``, every text box, and the regions
        ``"query i"`` and ``"prototype i"`` (``i = 1 .. k``) of the panels.

    Raises:
        ValueError: when images, part maps and ``detail`` disagree with each other.
    """
    images = [_check_image("the query", query)]
    images += [_check_image(f"prototype {j}", image) for j, image in enumerate(prototypes)]
    k = len(images) - 1
    if k < 1:
        raise ValueError("draw_explanation needs at least one prototype image.")
    if height < 1:
        raise ValueError(f"The panel height must be positive, got {height}.")
    entries, parts, matches = _check_detail(detail, k)
    prototype_maps = [None] * k if prototype_labels is None else list(prototype_labels)
    maps = _check_maps(images, [query_labels, *prototype_maps], k)

    widths = [max(1, round(image.shape[1] * height / image.shape[0])) for image in images]
    width = 2 * MARGIN + widths[0] + GAP + max(widths[1:])
    header = _header(detail, class_names, width - 2 * MARGIN)
    top = MARGIN + len(header) * line_height(font(_TITLE_FONT)) + ROW_GAP // 2
    rows = []
    for rank in range(k):
        row = _plan_row(rank, top, images, widths, height, parts, matches, entries[rank], class_names)
        rows.append(row)
        top = row.bottom + ROW_GAP
    canvas = Canvas(Image.new("RGB", (width, rows[-1].bottom + MARGIN), _WHITE))
    _draw_header(canvas, header)
    for row in rows:
        _draw_row(canvas, row, (images[0], images[row.rank + 1]), (maps[0], maps[row.rank + 1]))
    return canvas.figure()


def save_explanation(path: str | os.PathLike[str], figure: np.ndarray) -> None:
    """Write ``figure`` (``(H, W, 3)`` ``uint8``) to ``path`` as PNG, JPEG or PDF by its suffix, atomically (see :func:`xaikit.io.write_image_atomically`)."""
    write_image_atomically(path, _check_image("the figure", np.asarray(figure)))


# ------------------------------------------------------------------------------------------ checks
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
    _field(detail, "prediction")
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


# ------------------------------------------------------------------------------------------ layout
def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    """The readable name of class ``index``, or the index itself when no name is known."""
    if class_names is not None and 0 <= index < len(class_names):
        return readable_class_name(class_names[index])
    return str(index)


def _header(detail: Mapping[str, Any], class_names: Sequence[str] | None, width: int) -> list[tuple[str, Colour]]:
    """The verdict (and the fallback note) as wrapped ``(line, colour)`` pairs ``width`` pixels wide."""
    label = int(detail.get("label", -1))
    lines = verdict_lines(
        _class_name(int(detail["prediction"]), class_names), _class_name(label, class_names) if label >= 0 else None
    )
    if bool(detail.get("fallback", False)):
        lines.append((FALLBACK_TEXT, WRONG))
    title = font(_TITLE_FONT)
    return [(piece, colour) for text, colour in lines for piece in wrap(text, title, width)]


def _plan_row(
    rank: int,
    top: int,
    images: list[np.ndarray],
    widths: list[int],
    height: int,
    parts: list[list[_Entry]],
    matches: list[_Entry],
    entry: _Entry,
    class_names: Sequence[str] | None,
) -> _Row:
    """Lay out prototype ``rank``'s row from ``top``: title, panels, lines, names and captions."""
    mine = [_match_indices(match) for match in matches if int(match["prototype"]) == rank]
    title = _row_title(rank, entry, len(mine), class_names, max(widths[1:]))
    panel_top = top + len(title) * line_height(font(_TITLE_FONT))
    panels = (
        _panel(MARGIN, panel_top, images[0], widths[0], height),
        _panel(MARGIN + widths[0] + GAP, panel_top, images[rank + 1], widths[rank + 1], height),
    )
    pair = (parts[0], parts[rank + 1])
    colours = _pair_colours(mine, parts[0])
    marks = (_marks(pair[0], panels[0], colours[0]), _marks(pair[1], panels[1], colours[1]))
    links = [
        (start, end, colours[0][q])
        for q, _, p in mine
        if (start := _figure_point(pair[0][q], panels[0])) is not None and (end := _figure_point(pair[1][p], panels[1])) is not None
    ]
    placed = [_place_names(panel_marks, panel) for panel_marks, panel in zip(marks, panels)]
    part_font = font(_PART_FONT)
    captions = tuple(wrap(_unlabelled_text(names), part_font, panel.width) if names else [] for (_, names), panel in zip(placed, panels))
    caption_rows = max(len(caption) for caption in captions)
    return _Row(
        rank=rank,
        title_top=top,
        title=title,
        panels=panels,
        lines=links,
        marks=marks,
        kept=({int(pair[0][q]["label"]) for q, _, _ in mine}, {int(pair[1][p]["label"]) for _, _, p in mine}),
        labels=[pair for labelled, _ in placed for pair in labelled],
        captions=captions,
        bottom=panel_top + height + (caption_rows * line_height(part_font) + 2 if caption_rows else 0),
    )


def _row_title(rank: int, entry: _Entry, count: int, class_names: Sequence[str] | None, width: int) -> list[str]:
    """Prototype ``rank``'s title, wrapped to ``width``: rank and class, then similarity and matched parts."""
    name = f"#{rank + 1} {_class_name(int(entry['label']), class_names)}"
    scores = f"similarity {float(entry['similarity']):.2f} · {count} matched part{'' if count == 1 else 's'}"
    return [piece for text in (name, scores) for piece in wrap(text, font(_TITLE_FONT), width)]


def _pair_colours(mine: list[tuple[int, int, int]], query_parts: list[_Entry]) -> tuple[dict[int, Colour], dict[int, Colour]]:
    """Colour of each matched query part and each matched prototype part (its first query partner's), by index."""
    query = {q: part_colour(query_parts[q]["label"]) for q, _, _ in mine}
    prototype: dict[int, Colour] = {}
    for q, _, p in mine:
        prototype.setdefault(p, query[q])
    return query, prototype


def _panel(left: int, top: int, image: np.ndarray, width: int, height: int) -> _Panel:
    """The panel of ``image`` resized to ``width x height`` with its top left corner at ``(left, top)``."""
    rows, cols = image.shape[:2]
    return _Panel(left=left, top=top, width=width, height=height, scale_x=width / cols, scale_y=height / rows)


def _figure_point(part: _Entry, panel: _Panel) -> Point | None:
    """The part's keypoint in figure coordinates, or ``None`` when it is missing or not finite."""
    keypoint = part.get("keypoint")
    if keypoint is None:
        return None
    x, y = (float(value) for value in keypoint)
    return panel.to_figure((x, y)) if math.isfinite(x) and math.isfinite(y) else None


def _marks(parts: list[_Entry], panel: _Panel, colours: Mapping[int, Colour]) -> list[_Mark]:
    """The drawable parts of one panel: matched ones (index in ``colours``) first, then unmatched ones."""
    located = [(index, _figure_point(part, panel), part) for index, part in enumerate(parts)]
    marks = [_Mark(point, str(part["name"]), colours.get(index)) for index, point, part in located if point is not None]
    return [mark for mark in marks if mark.colour is not None] + [mark for mark in marks if mark.colour is None]


def _place_names(marks: list[_Mark], panel: _Panel) -> tuple[list[tuple[_Mark, Box]], list[str]]:
    """Place each mark's name inside ``panel`` around every marker and earlier name, matched parts first.

    Returns:
        The placed ``(mark, label box)`` pairs and the names of marks with no free spot.
    """
    if not marks:
        return [], []
    anchors = np.array([mark.point for mark in marks], np.float64)
    sizes = np.array([label_size(mark.name, font(_PART_FONT)) for mark in marks], np.float64)
    reach = _MARKER_RADIUS + 2
    markers = [Box(x - reach, y - reach, x + reach + 1, y + reach + 1) for x, y in anchors]
    boxes = place_labels(anchors, sizes, panel.box, markers, clearance=reach)
    placed = [(mark, box) for mark, box in zip(marks, boxes) if box is not None]
    return placed, [mark.name for mark, box in zip(marks, boxes) if box is None]


def _unlabelled_text(names: list[str]) -> str:
    """The caption listing the parts whose names found no free spot."""
    return "unlabelled: " + ", ".join(names)


# ------------------------------------------------------------------------------------------ drawing
def _draw_header(canvas: Canvas, header: list[tuple[str, Colour]]) -> None:
    """Write the verdict lines at the top left."""
    title = font(_TITLE_FONT)
    y = MARGIN
    for text, colour in header:
        canvas.text((MARGIN, y), text, title, colour)
        y += line_height(title)


def _draw_row(
    canvas: Canvas, row: _Row, images: tuple[np.ndarray, np.ndarray], maps: tuple[np.ndarray | None, np.ndarray | None]
) -> None:
    """Draw one row: titles, the two (dimmed) panels, the match lines, markers, leaders and names."""
    title = font(_TITLE_FONT)
    if row.rank == 0:
        canvas.text((row.panels[0].left, row.title_top), "query", title, INK)
    canvas.paragraph((row.panels[1].left, row.title_top), row.title, title, INK)
    for panel, image, labels, kept, name in zip(row.panels, images, maps, row.kept, ("query", "prototype")):
        _paste(canvas, panel, image, labels, kept)
        canvas.regions[f"{name} {row.rank + 1}"] = panel.box
    for start, end, _ in row.lines:  # a dark casing keeps every line visible on light and dark images
        canvas.draw.line([start, end], fill=_LABEL_BOX, width=_LINE_WIDTH + 2)
    for start, end, colour in row.lines:
        canvas.draw.line([start, end], fill=colour, width=_LINE_WIDTH)
    for marks in row.marks:
        for mark in sorted(marks, key=lambda mark: mark.colour is not None):  # matched markers on top
            _draw_marker(canvas, mark)
    for mark, box in row.labels:
        _draw_leader(canvas, mark, box)
    for mark, box in row.labels:
        colours = (UNMATCHED_GREY, _LABEL_BOX, None) if mark.colour is None else (_lighten(mark.colour), _LABEL_BOX, mark.colour)
        canvas.label(box, mark.name, font(_PART_FONT), colours)
    for panel, caption in zip(row.panels, row.captions):
        canvas.paragraph((panel.left, panel.top + panel.height + 2), caption, font(_PART_FONT), _CAPTION)


def _paste(canvas: Canvas, panel: _Panel, image: np.ndarray, labels: np.ndarray | None, kept: set[int]) -> None:
    """Paste ``image`` into ``panel``; with a part map ``labels``, the parts whose label is not in ``kept`` are dimmed."""
    shown = image if labels is None else _dim_unmatched(image, labels, kept)
    resized = Image.fromarray(shown).resize((panel.width, panel.height), Image.Resampling.BILINEAR)
    canvas.image.paste(resized, (panel.left, panel.top))


def _dim_unmatched(image: np.ndarray, labels: np.ndarray, kept: set[int]) -> np.ndarray:
    """Blend every part pixel whose label is not in ``kept`` towards grey; background and kept parts stay."""
    dim = (labels != 0) & ~np.isin(labels, sorted(kept))
    out = image.copy()
    out[dim] = np.rint(image[dim] * (1.0 - _DIM_STRENGTH) + _DIM_TARGET * _DIM_STRENGTH).astype(np.uint8)
    return out


def _draw_marker(canvas: Canvas, mark: _Mark) -> None:
    """A filled circle in the match colour, or a small grey hollow one for an unmatched part."""
    x, y = mark.point
    radius = _UNMATCHED_RADIUS if mark.colour is None else _MARKER_RADIUS
    fill, outline = (None, UNMATCHED_GREY) if mark.colour is None else (mark.colour, _LABEL_BOX)
    canvas.draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=outline, width=1)


def _draw_leader(canvas: Canvas, mark: _Mark, box: Box) -> None:
    """A thin line from the marker to its name's box when the name sits beyond the nearest ring."""
    x, y = mark.point
    nearest = (min(max(x, box.left), box.right - 1), min(max(y, box.top), box.bottom - 1))
    if math.dist((x, y), nearest) > 2 * (_MARKER_RADIUS + 2):
        canvas.draw.line([(x, y), nearest], fill=mark.colour or UNMATCHED_GREY, width=1)


def _lighten(colour: Colour) -> Colour:
    """``colour`` blended 35% towards white, readable on the dark label box."""
    red, green, blue = (round(channel + (255 - channel) * 0.35) for channel in colour)
    return red, green, blue
