"""The comparison's PNG plots, drawn with matplotlib (the ``plot`` extra) on a figure of its own (no pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from xaikit.errors import MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["accuracy_plot", "per_class_plot", "require_matplotlib"]


def require_matplotlib() -> None:
    """Refuse, in one sentence with the install hint, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError("xaikit compare draws its plots with matplotlib, which is not installed; pip install 'xaikit[plot]'") from None


def accuracy_plot(points: Sequence[tuple[str, float, float | None, float | None]]) -> bytes:
    """Each run's accuracy with its 95 % interval, one horizontal bar per run, as PNG bytes.

    Args:
        points: ``(run, value, low, high)`` per run, in percent; a ``None`` bound draws no whisker.
    """
    from matplotlib.figure import Figure

    names = [point[0] for point in points]
    values = np.array([point[1] for point in points], dtype=np.float64)
    low = np.array([point[1] if point[2] is None else point[2] for point in points], dtype=np.float64)
    high = np.array([point[1] if point[3] is None else point[3] for point in points], dtype=np.float64)
    label_width = 0.065 * max(len(name) for name in names)  # inches for the longest run name
    figure = Figure(figsize=(5.0 + label_width, 1.0 + 0.45 * len(points)), layout="constrained")
    axes = figure.add_subplot()
    rows = np.arange(len(points))
    axes.errorbar(values, rows, xerr=np.stack([values - low, high - values]), fmt="o", capsize=4, color="tab:blue")
    axes.set_yticks(rows, names)
    axes.invert_yaxis()
    axes.set_xlabel("accuracy (%), with its 95% bootstrap interval")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def per_class_plot(classes: Sequence[str], runs: Sequence[str], accuracy: np.ndarray) -> bytes:
    """Per-class top-1 accuracy as a heat map, classes down and runs across, as PNG bytes.

    Args:
        classes: the ``C`` class names.
        runs: the ``R`` run names.
        accuracy: ``(C, R)`` float percentages, NaN where a run saw no image of the class (drawn blank).
    """
    from matplotlib.figure import Figure

    label_width = 0.065 * max((len(name) for name in classes), default=0)  # inches for the longest class name
    figure = Figure(figsize=(2.5 + label_width + 0.9 * len(runs), 1.5 + 0.22 * len(classes)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(accuracy), aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest")
    axes.set_xticks(np.arange(len(runs)), runs, rotation=30, ha="right")
    axes.set_yticks(np.arange(len(classes)), classes, fontsize=7 if len(classes) > 30 else 9)
    figure.colorbar(image, ax=axes, label="top-1 accuracy (%)")
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
