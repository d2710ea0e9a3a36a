"""Draw an IVPT explanation: concept regions at every layer and the final concepts' importance.

IVPT (Wang et al. 2025) explains a ViT with concept prototypes at several layers, fine to coarse, each
layer's last channel being background. The input image comes first, then one overlay per layer: the
image resized to a ``panel_size`` square with each patch's most probable (argmax) concept blended in
its colour at :data:`OVERLAY_ALPHA`, the background channel left uncoloured. The argmax is taken at the
map's own resolution and upsampled with nearest neighbour, so regions keep the ViT's patch grid;
foreground pixels on a region's border are drawn in a darker shade of its colour, which separates
fine concepts that share a colour. The final layer's foreground concept ``g`` gets
:func:`concept_colour` ``(g)``; a fine concept of an intermediate layer takes the colour of the coarse
(final) concept it is grouped into, so a hierarchy shows as the same colour across layers, and a fine
concept grouped into none is :data:`UNLINKED_GREY`. Under the panels a horizontal bar chart gives each
final concept's importance for the predicted class (as in Figure 5 of the IVPT paper).

Figure layout (all in output pixels): a white title band of :data:`HEADER_HEIGHT` rows; the panels,
``panel_size`` rows, side by side from the left edge with :data:`GAP` columns between neighbours;
a :data:`CAPTION_HEIGHT`-row band with each panel's name and, under a layer, how many concepts it has
(``"16 fine -> 4 coarse, 2 unlinked"``); then the chart: a :data:`CHART_HEADING`-row heading and one
:data:`ROW_HEIGHT`-row row per final concept holding a :data:`BAR_HEIGHT`-row bar, and a
:data:`MARGIN`-row white band at the bottom. The figure is as wide as the panels, but at least
:data:`CHART_MIN_WIDTH`. Across a chart row lie, after a :data:`MARGIN`-column margin, the concept's
colour swatch and name in a :data:`LABEL_WIDTH`-column block, the bar area, and the value (two
decimals) right-aligned in a :data:`VALUE_WIDTH`-column block before the right margin. A bar is drawn
from the zero axis, rightwards for a positive and leftwards for a negative value, in the concept's
colour; all bars share one scale, chosen so that the largest positive and the largest negative value
together span the bar area, and the axis sits where the two sides meet (at the left edge when no
value is negative).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xaikit.errors import XaikitError
from xaikit_klc.figure import PALETTE, UNMATCHED_GREY

__all__ = [
    "BAR_HEIGHT",
    "CAPTION_HEIGHT",
    "CHART_HEADING",
    "CHART_MIN_WIDTH",
    "GAP",
    "HEADER_HEIGHT",
    "LABEL_WIDTH",
    "MARGIN",
    "OVERLAY_ALPHA",
    "PALETTE",
    "ROW_HEIGHT",
    "UNLINKED_GREY",
    "VALUE_WIDTH",
    "concept_colour",
    "render_ivpt",
]

Colour = tuple[int, int, int]
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

GAP = 8
"""White columns between neighbouring panels."""
HEADER_HEIGHT = 24
"""Rows of the title band above the panels (one line of text)."""
CAPTION_HEIGHT = 38
"""Rows of the band under the panels: the panel's name and its concept counts."""
CHART_HEADING = 20
"""Rows of the chart's heading line."""
ROW_HEIGHT = 20
"""Rows per final concept in the chart."""
BAR_HEIGHT = 14
"""Rows of one bar, centred in its chart row."""
MARGIN = 8
"""Columns left and right of the chart, and white rows under it."""
LABEL_WIDTH = 104
"""Columns of a chart row's swatch and concept name."""
VALUE_WIDTH = 48
"""Columns of a chart row's value, at its right."""
CHART_MIN_WIDTH = 360
"""The narrowest figure, so that the chart keeps a usable bar area whatever the panels."""
OVERLAY_ALPHA = 0.5
"""Weight of a concept's colour over the image inside its region."""
UNLINKED_GREY: Colour = UNMATCHED_GREY
"""Colour of fine concepts that no coarse concept claims (the KLC figure's grey for unmatched parts)."""

_WHITE: Colour = (255, 255, 255)
_INK: Colour = (20, 20, 20)
_MUTED: Colour = (110, 110, 110)
_EDGE_SHADE = 0.6
_LINE_HEIGHT = 17
_TITLE_FONT = 13
_TEXT_FONT = 12
_SMALL_FONT = 11
_SWATCH = 10


def concept_colour(index: int) -> Colour:
    """The palette colour of final concept ``index`` (0-based; the KLC figure's colour of part ``index + 1``)."""
    return PALETTE[int(index) % len(PALETTE)]


def render_ivpt(
    image: np.ndarray,
    layer_maps: Sequence[np.ndarray],
    layer_names: Sequence[str],
    importance: Sequence[float],
    concept_names: Sequence[str],
    hierarchy: Sequence[Sequence[int | None]],
    title: str,
    panel_size: int = 160,
) -> np.ndarray:
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
        title: the line written in the title band, shortened to fit.
        panel_size: side of every (square) panel in pixels.

    Returns:
        The figure, ``(HEADER_HEIGHT + panel_size + CAPTION_HEIGHT + CHART_HEADING + G * ROW_HEIGHT
        + MARGIN, max((L + 1) * panel_size + L * GAP, CHART_MIN_WIDTH), 3)`` ``uint8`` for ``L`` layers.

    Raises:
        XaikitError: when the image, maps, names, importance and hierarchy disagree with each other.
    """
    image = _check_image(image)
    maps = _check_inputs(layer_maps, layer_names, importance, concept_names, hierarchy, panel_size)
    values = [float(value) for value in importance]
    groups = len(values)
    layers = len(maps)

    width = max((layers + 1) * panel_size + layers * GAP, CHART_MIN_WIDTH)
    chart_top = HEADER_HEIGHT + panel_size + CAPTION_HEIGHT
    height = chart_top + CHART_HEADING + groups * ROW_HEIGHT + MARGIN
    figure = np.full((height, width, 3), 255, np.uint8)

    square = np.asarray(Image.fromarray(image).resize((panel_size, panel_size), Image.Resampling.BILINEAR))
    figure[HEADER_HEIGHT : HEADER_HEIGHT + panel_size, :panel_size] = square
    for index, probabilities in enumerate(maps, start=1):
        links = hierarchy[index - 1] if index < layers else range(groups)
        left = index * (panel_size + GAP)
        overlay = _overlay(square, probabilities, _channel_colours(links))
        figure[HEADER_HEIGHT : HEADER_HEIGHT + panel_size, left : left + panel_size] = overlay

    canvas = Image.fromarray(figure)
    draw = ImageDraw.Draw(canvas)
    _draw_text(draw, (4, 5), str(title), _font(_TITLE_FONT), width - 8, _INK)
    _draw_captions(draw, maps, layer_names, hierarchy, panel_size)
    _draw_chart(draw, chart_top, width, values, concept_names)
    return np.array(canvas)


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


def _draw_captions(
    draw: ImageDraw.ImageDraw,
    maps: list[np.ndarray],
    layer_names: Sequence[str],
    hierarchy: Sequence[Sequence[int | None]],
    panel_size: int,
) -> None:
    """Under each panel, its name and a line on its concepts (fine -> coarse for intermediate layers)."""
    top = HEADER_HEIGHT + panel_size + 3
    name_font, small = _font(_TEXT_FONT), _font(_SMALL_FONT)
    groups = maps[-1].shape[0] - 1
    _draw_text(draw, (2, top), "input", name_font, panel_size - 2, _INK)
    for index, (probabilities, name) in enumerate(zip(maps, layer_names)):
        left = (index + 1) * (panel_size + GAP)
        fine = probabilities.shape[0] - 1
        if index < len(maps) - 1:
            unlinked = sum(link is None for link in hierarchy[index])
            counts = f"{fine} fine -> {groups} coarse" + (f", {unlinked} unlinked" if unlinked else "")
        else:
            counts = f"{fine} concept{'s' if fine != 1 else ''} + background"
        _draw_text(draw, (left + 2, top), str(name), name_font, panel_size - 2, _INK)
        _draw_text(draw, (left + 2, top + _LINE_HEIGHT), counts, small, panel_size - 2, _MUTED)


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


def _draw_chart(
    draw: ImageDraw.ImageDraw, top: int, width: int, values: list[float], concept_names: Sequence[str]
) -> None:
    """The importance chart: heading, then per concept a swatch, its name, its bar and its value."""
    text, small = _font(_TEXT_FONT), _font(_SMALL_FONT)
    _draw_text(draw, (MARGIN, top + 3), "concept importance", text, width - 2 * MARGIN, _INK)
    area_left = MARGIN + LABEL_WIDTH
    area_width = width - 2 * MARGIN - LABEL_WIDTH - VALUE_WIDTH
    axis, extents = _bars(values, area_left, area_width)
    first_row = top + CHART_HEADING
    for index, (value, name, (start, stop)) in enumerate(zip(values, concept_names, extents)):
        row = first_row + index * ROW_HEIGHT
        bar_top = row + (ROW_HEIGHT - BAR_HEIGHT) // 2
        middle = row + ROW_HEIGHT // 2
        colour = concept_colour(index)
        draw.rectangle([MARGIN, middle - _SWATCH // 2, MARGIN + _SWATCH - 1, middle + _SWATCH // 2 - 1], fill=colour)
        label_left = MARGIN + _SWATCH + 4
        _draw_text(draw, (label_left, middle), str(name), small, area_left - label_left - 4, _INK, centred=True)
        if stop > start:
            draw.rectangle([start, bar_top, stop - 1, bar_top + BAR_HEIGHT - 1], fill=colour)
        number = f"{value:.2f}"
        number_left = width - MARGIN - round(draw.textlength(number, font=small))
        _draw_text(draw, (number_left, middle), number, small, VALUE_WIDTH, _INK, centred=True)
    if values:
        draw.line([(axis, first_row), (axis, first_row + len(values) * ROW_HEIGHT - 1)], fill=_INK, width=1)


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: _Font,
    width: int,
    colour: Colour,
    centred: bool = False,
) -> None:
    """Write ``text`` from ``xy``, cut to its longest prefix plus "..." that fits ``width`` pixels.

    ``xy`` is the text's top left corner, or with ``centred`` its left end at mid-height.
    """
    if draw.textlength(text, font=font) > width:
        end = len(text)
        while end > 0 and draw.textlength(f"{text[:end].rstrip()}...", font=font) > width:
            end -= 1
        text = f"{text[:end].rstrip()}..." if end > 0 else ""
    if not text:
        return
    x, y = xy
    if centred:
        _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)  # one baseline for every text
        y -= (top + bottom) // 2
    draw.text((x, y), text, font=font, fill=colour)


@functools.lru_cache(maxsize=None)
def _font(size: int) -> _Font:
    """Pillow's default font at ``size`` points, or its fixed bitmap font when that cannot be scaled."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 takes no size; no FreeType cannot scale
        return ImageFont.load_default()
