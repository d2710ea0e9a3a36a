from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xaikit.errors import XaikitError
from xaikit.figure_layout import INK, Box, Canvas, Figure, font, line_height, text_width, verdict_lines, wrap
from xaikit_klc.figure import PALETTE, UNMATCHED_GREY

__all__ = [
    "BAR_HEIGHT",
    "CHART_MIN_WIDTH",
    "GAP",
    "MARGIN",
    "MIN_BAR_AREA",
    "OVERLAY_ALPHA",
    "PALETTE",
    "ROW_HEIGHT",
    "UNLINKED_GREY",
    "concept_colour",
    "draw_ivpt",
]

Colour = tuple[int, int, int]

GAP = 8
"""White columns between neighbouring panels."""
ROW_HEIGHT = 20
"""Rows per final concept in the chart."""
BAR_HEIGHT = 14
"""Rows of one bar, centred in its chart row."""
MARGIN = 8
"""White border around the figure."""
CHART_MIN_WIDTH = 360
"""The narrowest figure, so that the chart keeps a usable bar area whatever the panels."""
MIN_BAR_AREA = 120
"""The narrowest bar area; long concept names widen the figure rather than squeeze the bars."""
OVERLAY_ALPHA = 0.5
"""Weight of a concept's colour over the image inside its region."""
UNLINKED_GREY: Colour = UNMATCHED_GREY
"""Colour of fine concepts that no coarse concept claims (the KLC figure's grey for unmatched parts)."""

_WHITE: Colour = (255, 255, 255)
_MUTED: Colour = (110, 110, 110)
_EDGE_SHADE = 0.6
_TITLE_FONT = 13
_TEXT_FONT = 12
_SWATCH = 10
_COLUMN_GAP = 6


def concept_colour(index: int) -> Colour:
    """The palette colour of final concept ``index`` (0-based; the KLC figure's colour of part ``index + 1``)."""
    return PALETTE[int(index) % len(PALETTE)]


def draw_ivpt(
    image: np.ndarray,
    layer_maps: Sequence[np.ndarray],
    layer_names: Sequence[str],
    importance: Sequence[float],
    concept_names: Sequence[str],
    hierarchy: Sequence[Sequence[int | None]],
    predicted: str,
    true: str | None = None,
    panel_size: int = 160,
) -> Figure:
    """Draw the image, each layer's concept regions and the final concepts' importance.

    Args:
        image: the input image, ``(H, W, 3)`` ``uint8`` RGB.
        layer_maps: one ``(n_l, h_l, w_l)`` probability map per layer, fine to coarse, ``n_l >= 2``;
            each map's last channel is background. Maps may differ in size and need not be square.
        layer_names: one name per layer, written under its panel.
        importance: one value per final foreground concept (``G = n_last - 1``); may be negative.
        concept_names: the ``G`` final concepts' names.
        hierarchy: for each layer but the last, for each of its ``n_l - 1`` foreground concepts, the
            final concept (``0 .. G - 1``) it is grouped into, or ``None``.
        predicted: the predicted class's name.
        true: the true class's name, or ``None`` when unknown; when given, the verdict says whether
            the prediction is correct (green) or wrong (red).
        panel_size: side of every (square) panel in pixels.

    Returns:
        The :class:`~xaikit.figure_layout.Figure`: pixels ``(H, W, 3)`` ``uint8`` with ``W >=
        max(2 * MARGIN + (L + 1) * panel_size + L * GAP, CHART_MIN_WIDTH)`` for ``L`` layers, every
        text box, and the regions ``"input"``, ``"layer 1"`` ... ``"layer L"`` and ``"chart"``.

    Raises:
        XaikitError: when the image, maps, names, importance and hierarchy disagree with each other.
    """
    image = _check_image(image)
    maps = _check_inputs(layer_maps, layer_names, importance, concept_names, hierarchy, panel_size)
    values = [float(value) for value in importance]
    names = [str(name) for name in concept_names]
    layout = _layout(maps, layer_names, hierarchy, values, names, verdict_lines(predicted, true), panel_size)
    figure = np.full((layout.height, layout.width, 3), 255, np.uint8)
    square = np.asarray(Image.fromarray(image).resize((panel_size, panel_size), Image.Resampling.BILINEAR))
    panels = [square] + [
        _overlay(square, probabilities, _channel_colours(hierarchy[index] if index < len(maps) - 1 else range(len(values))))
        for index, probabilities in enumerate(maps)
    ]
    for left, panel in zip(layout.lefts, panels):
        figure[layout.panel_top : layout.panel_top + panel_size, left : left + panel_size] = panel

    canvas = Canvas(Image.fromarray(figure))
    title, text = font(_TITLE_FONT), font(_TEXT_FONT)
    for row, (line, colour) in enumerate(layout.verdict):
        canvas.text((MARGIN, MARGIN + row * line_height(title)), line, title, colour)
    caption_top = layout.panel_top + panel_size + 3
    for index, (left, lines) in enumerate(zip(layout.lefts, layout.captions)):
        canvas.regions["input" if index == 0 else f"layer {index}"] = _box(left, layout.panel_top, panel_size, panel_size)
        for row, (line, colour) in enumerate(lines):
            canvas.text((left, caption_top + row * line_height(text)), line, text, colour)
    chart = _box(MARGIN, layout.chart_top, layout.width - 2 * MARGIN, layout.height - MARGIN - layout.chart_top)
    canvas.regions["chart"] = chart
    _draw_chart(canvas, chart, values, names, layout.chart_columns)
    return canvas.figure()


@dataclass(frozen=True)
class _Layout:
    """Where everything of an IVPT figure goes (output pixels) and its wrapped texts."""

    width: int
    height: int
    lefts: list[int]  # left column of each panel, the input first
    panel_top: int
    chart_top: int
    verdict: list[tuple[str, Colour]]  # wrapped lines
    captions: list[list[tuple[str, Colour]]]  # wrapped lines per panel
    chart_columns: tuple[int, int]  # widths of the swatch-and-name block and of the value block


def _layout(
    maps: list[np.ndarray],
    layer_names: Sequence[str],
    hierarchy: Sequence[Sequence[int | None]],
    values: list[float],
    names: list[str],
    verdict: list[tuple[str, Colour]],
    panel_size: int,
) -> _Layout:
    """Measure every text and place panels, captions and chart so that nothing is cut or overlaps.

    Panels are ``panel_size`` wide but spaced wider when a caption word needs it; the figure widens
    for the chart's longest name and value.
    """
    title, text = font(_TITLE_FONT), font(_TEXT_FONT)
    label_width = _SWATCH + 4 + max((text_width(name, text) for name in names), default=0)
    value_width = max((text_width(f"{value:.2f}", text) for value in values), default=0)
    chart_width = label_width + value_width + 2 * _COLUMN_GAP + MIN_BAR_AREA
    texts = _caption_texts(maps, layer_names, hierarchy)
    column = max([panel_size, *(text_width(word, text) for lines in texts for line, _ in lines for word in line.split())])
    panels_width = (len(maps) + 1) * column + len(maps) * GAP
    width = 2 * MARGIN + max(panels_width, CHART_MIN_WIDTH - 2 * MARGIN, chart_width)
    wrapped = [(piece, colour) for line, colour in verdict for piece in wrap(line, title, width - 2 * MARGIN)]
    captions = [[(piece, colour) for line, colour in lines for piece in wrap(line, text, column)] for lines in texts]
    panel_top = MARGIN + len(wrapped) * line_height(title) + 4
    chart_top = panel_top + panel_size + 3 + max(len(lines) for lines in captions) * line_height(text) + 6
    return _Layout(
        width=width,
        height=chart_top + line_height(text) + len(values) * ROW_HEIGHT + MARGIN,
        lefts=[MARGIN + index * (column + GAP) for index in range(len(maps) + 1)],
        panel_top=panel_top,
        chart_top=chart_top,
        verdict=wrapped,
        captions=captions,
        chart_columns=(label_width, value_width),
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an array if it is a non-empty ``(H, W, 3)`` ``uint8`` image, else raise."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        got = f"{array.shape} {array.dtype}"
        raise XaikitError(f"The IVPT image must be a non-empty (H, W, 3) uint8 array, got {got}.")
    return array


def _check_inputs(
    layer_maps: Sequence[np.ndarray],
    layer_names: Sequence[str],
    importance: Sequence[float],
    concept_names: Sequence[str],
    hierarchy: Sequence[Sequence[int | None]],
    panel_size: int,
) -> list[np.ndarray]:
    """Check everything but the image against each other; return the maps as arrays."""
    if not _is_index(panel_size) or panel_size < 1:
        raise XaikitError(f"The IVPT panel size must be a positive integer, got {panel_size!r}.")
    maps = [np.asarray(probabilities) for probabilities in layer_maps]
    if not maps:
        raise XaikitError("The IVPT figure needs at least one layer map.")
    for index, probabilities in enumerate(maps):
        shape = probabilities.shape
        if probabilities.ndim != 3 or 0 in shape[1:]:
            raise XaikitError(f"IVPT layer map {index} must be a non-empty (n, h, w) array, got shape {shape}.")
        if shape[0] < 2:
            raise XaikitError(f"IVPT layer map {index} has {shape[0]} channels but needs a concept and background.")
        if not (np.issubdtype(probabilities.dtype, np.number) or probabilities.dtype == np.bool_):
            raise XaikitError(f"IVPT layer map {index} must hold numbers, got dtype {probabilities.dtype}.")
    if len(layer_names) != len(maps):
        raise XaikitError(f"{len(layer_names)} IVPT layer names were given for {len(maps)} layer maps.")
    groups = maps[-1].shape[0] - 1
    for what, count in (("importance values", len(importance)), ("concept names", len(concept_names))):
        if count != groups:
            raise XaikitError(f"{count} IVPT {what} were given for the final layer's {groups} foreground concepts.")
    if not all(math.isfinite(float(value)) for value in importance):
        raise XaikitError("Every IVPT importance value must be a finite number.")
    if len(hierarchy) != len(maps) - 1:
        count, layers = len(hierarchy), len(maps)
        raise XaikitError(f"The IVPT hierarchy has {count} entries but {layers} layers need {layers - 1}.")
    for index, (links, probabilities) in enumerate(zip(hierarchy, maps)):
        fine = probabilities.shape[0] - 1
        if len(links) != fine:
            raise XaikitError(
                f"IVPT hierarchy entry {index} has {len(links)} links for layer {index}'s {fine} foreground concepts."
            )
        for link in links:
            if link is not None and not (_is_index(link) and 0 <= link < groups):
                raise XaikitError(
                    f"IVPT hierarchy entry {index} links to {link!r}, not None or a concept in 0..{groups - 1}."
                )
    return maps


def _is_index(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _channel_colours(links: Sequence[int | None]) -> np.ndarray:
    """``(n, 3)`` float colours of a layer's foreground channels from their coarse concepts, then background."""
    colours = [UNLINKED_GREY if link is None else concept_colour(link) for link in links]
    return np.array([*colours, _WHITE], dtype=np.float64)  # the background row is never drawn


def _overlay(square: np.ndarray, probabilities: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Blend each foreground argmax region of ``probabilities`` over ``square`` in its colour.

    The argmax is taken per patch and upsampled with nearest neighbour (a panel pixel takes the patch
    its centre falls in); foreground pixels with a 4-neighbour of another label are drawn darker.
    """
    size = square.shape[0]
    channels, rows, cols = probabilities.shape
    labels = np.argmax(probabilities, axis=0)
    row_index = np.minimum(((np.arange(size) + 0.5) * rows / size).astype(np.int64), rows - 1)
    col_index = np.minimum(((np.arange(size) + 0.5) * cols / size).astype(np.int64), cols - 1)
    labels = labels[row_index[:, None], col_index[None, :]]
    foreground = labels != channels - 1

    border = np.zeros_like(foreground)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    border[1:] |= vertical
    border[:-1] |= vertical
    border[:, 1:] |= horizontal
    border[:, :-1] |= horizontal

    out = square.astype(np.float64)
    tint = colours[labels]
    inside = foreground & ~border
    out[inside] = out[inside] * (1.0 - OVERLAY_ALPHA) + tint[inside] * OVERLAY_ALPHA
    edge = foreground & border
    out[edge] = tint[edge] * _EDGE_SHADE
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _box(left: int, top: int, width: int, height: int) -> Box:
    """The :class:`~xaikit.figure_layout.Box` of ``width x height`` pixels from ``(left, top)``."""
    return Box(left, top, left + width, top + height)


def _caption_texts(
    maps: list[np.ndarray], layer_names: Sequence[str], hierarchy: Sequence[Sequence[int | None]]
) -> list[list[tuple[str, Colour]]]:
    """Per panel (the input first), its name and a line on its concepts, unwrapped, with colours."""
    groups = maps[-1].shape[0] - 1
    captions = [[("input", INK)]]
    for index, (probabilities, name) in enumerate(zip(maps, layer_names)):
        fine = probabilities.shape[0] - 1
        if index < len(maps) - 1:
            unlinked = sum(link is None for link in hierarchy[index])
            counts = f"{fine} fine -> {groups} coarse" + (f", {unlinked} unlinked" if unlinked else "")
        else:
            counts = f"{fine} concept{'s' if fine != 1 else ''} + background"
        captions.append([(str(name), INK), (counts, _MUTED)])
    return captions


def _bars(values: list[float], area_left: int, area_width: int) -> tuple[int, list[tuple[int, int]]]:
    """The axis column and each bar's ``[first, last)`` columns in a bar area of ``area_width`` columns.

    One scale for all bars: the largest positive and largest negative magnitude together span the
    area minus the axis column. An empty bar is ``(axis, axis)``.
    """
    positive = max([value for value in values if value > 0], default=0.0)
    negative = max([-value for value in values if value < 0], default=0.0)
    span = positive + negative
    usable = area_width - 1
    axis = area_left + (round(usable * negative / span) if span > 0 else 0)
    extents = []
    for value in values:
        length = round(abs(value) * usable / span) if span > 0 else 0
        if value > 0:
            extents.append((axis + 1, min(axis + 1 + length, area_left + area_width)))
        elif value < 0:
            extents.append((max(axis - length, area_left), axis))
        else:
            extents.append((axis, axis))
    return axis, extents


def _draw_chart(canvas: Canvas, chart: Box, values: list[float], names: list[str], columns: tuple[int, int]) -> None:
    """The importance chart in ``chart``: heading, then per concept a swatch, its name, its bar and its value.

    ``columns`` are the widths of the swatch-and-name block and of the value block.
    """
    text = font(_TEXT_FONT)
    left, right = int(chart.left), int(chart.right)
    canvas.text((left, chart.top), "concept importance for the predicted class", text, INK)
    label_width, value_width = columns
    area_left = left + label_width + _COLUMN_GAP
    area_width = right - value_width - _COLUMN_GAP - area_left
    axis, extents = _bars(values, area_left, area_width)
    first_row = int(chart.top) + line_height(text)
    _, ink_top, _, ink_bottom = text.getbbox("Ag")  # one baseline for every row
    for index, (value, name, (start, stop)) in enumerate(zip(values, names, extents)):
        row = first_row + index * ROW_HEIGHT
        bar_top = row + (ROW_HEIGHT - BAR_HEIGHT) // 2
        middle = row + ROW_HEIGHT // 2
        baseline = middle - (ink_top + ink_bottom) // 2
        colour = concept_colour(index)
        canvas.draw.rectangle([left, middle - _SWATCH // 2, left + _SWATCH - 1, middle + _SWATCH // 2 - 1], fill=colour)
        canvas.text((left + _SWATCH + 4, baseline), name, text, INK)
        if stop > start:
            canvas.draw.rectangle([start, bar_top, stop - 1, bar_top + BAR_HEIGHT - 1], fill=colour)
        number = f"{value:.2f}"
        canvas.text((right - text_width(number, text), baseline), number, text, INK)
    if values:
        canvas.draw.line([(axis, first_row), (axis, first_row + len(values) * ROW_HEIGHT - 1)], fill=INK, width=1)
