"""The part overlay ``xaikit segment`` writes: parts in colour over the image, and a legend of the parts found."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xaikit.types import PartMap

__all__ = ["ALPHA", "PALETTE", "colourise", "legend", "overlay"]

ALPHA = 0.5
"""Opacity of the part colours over the image."""
PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
    ],
    dtype=np.uint8,
)
"""Part colours: label ``k`` gets ``PALETTE[(k - 1) % len(PALETTE)]`` (Sasha Trubetskoy's distinct colours)."""
_SWATCH, _PAD = 12, 6



def colourise(image: np.ndarray, part_map: PartMap, alpha: float = ALPHA) -> np.ndarray:
    """Blend each part's colour over the image: RGB ``(H, W, 3)`` ``uint8`` in and out; background untouched."""
    labels = part_map.labels.cpu().numpy()
    colours = PALETTE[(np.maximum(labels, 1) - 1) % len(PALETTE)].astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.where((labels > 0)[..., None], blended, image).round().astype(np.uint8)


def legend(entries: list[tuple[int, str]], height: int) -> np.ndarray:
    """A white panel ``(max(height, needed), W, 3)`` listing each ``(label, name)`` beside its colour swatch."""
    font = ImageFont.load_default()
    lines = [name for _, name in entries] or ["no parts found"]
    boxes = [ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), line, font=font) for line in lines]
    row = max(_SWATCH, max(box[3] for box in boxes)) + _PAD
    width = _PAD * 3 + _SWATCH + max(box[2] for box in boxes)
    panel = Image.new("RGB", (width, max(height, _PAD + row * len(lines))), "white")
    draw = ImageDraw.Draw(panel)
    for index, line in enumerate(lines):
        top = _PAD + index * row
        if entries:
            colour = tuple(int(value) for value in PALETTE[(entries[index][0] - 1) % len(PALETTE)])
            draw.rectangle([_PAD, top, _PAD + _SWATCH - 1, top + _SWATCH - 1], fill=colour, outline="black")
        draw.text((_PAD * 2 + _SWATCH, top), line, fill="black", font=font)
    return np.asarray(panel)


def overlay(image: np.ndarray, part_map: PartMap) -> np.ndarray:
    """The coloured image with the legend of the parts present on its right, RGB ``uint8``."""
    entries = [(label, part_map.names.get(label, f"label {label}")) for label in part_map.present().tolist()]
    coloured = colourise(image, part_map)
    panel = legend(entries, image.shape[0])
    canvas = np.full((max(coloured.shape[0], panel.shape[0]), coloured.shape[1] + panel.shape[1], 3), 255, np.uint8)
    canvas[: coloured.shape[0], : coloured.shape[1]] = coloured
    canvas[: panel.shape[0], coloured.shape[1] :] = panel
    return canvas
