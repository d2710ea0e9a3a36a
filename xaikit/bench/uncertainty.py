"""Confidence intervals: a seeded percentile bootstrap over the evaluated images, or over a metric's units.

Huang et al.'s metrics and accuracy are reported on a few hundred to a few thousand images; on 200
images one image is 0.5 points, so a difference between two runs means little without an interval.
:func:`bootstrap_interval` resamples the images with replacement ``resamples`` times (seeded, so a
resumed run reports the same interval), scores each resample and takes the 2.5th and 97.5th
percentiles of the headline value (Efron's percentile interval). A metric whose value is a mean over
images (:meth:`~xaikit.PredictionMetric.per_image`, e.g. accuracy) is resampled in one vectorised
step; any other :class:`~xaikit.PredictionMetric`, a plugin's too, is scored once per resample. A
metric whose value is a mean over units (:attr:`~xaikit.MetricResult.unit_values`: Huang et al.'s
class-concept units, faithfulness' images) gets :func:`mean_interval` of those values, over units.

Every interval draws its rows with :func:`resampled_rows`, in numpy: this module imports no torch, so
that ``xaikit compare``'s paired bootstrap, which resamples the same way, starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from xaikit.errors import XaikitError

if TYPE_CHECKING:
    import torch

    from xaikit.interfaces import PredictionMetric

__all__ = ["LEVEL", "OVER_IMAGES", "OVER_UNITS", "bootstrap_interval", "mean_interval", "resampled_rows"]

LEVEL = 0.95
"""The confidence level of every interval."""

OVER_IMAGES = "percentile bootstrap over images"
"""The ``method`` of an interval that resamples the evaluated images."""

OVER_UNITS = "percentile bootstrap over units"
"""The ``method`` of an interval that resamples a metric's units (:attr:`~xaikit.MetricResult.unit_values`)."""


def bootstrap_interval(metric: PredictionMetric, labels: torch.Tensor, scores: torch.Tensor, *, resamples: int, seed: int) -> dict[str, Any]:
    """The 95 % percentile-bootstrap interval of ``metric``'s value over images, as recorded in ``summary.json``.

    Args:
        metric: the metric; its :meth:`~xaikit.PredictionMetric.score` scores each resample.
        labels: true classes of the evaluated images, ``(N,)`` ``int64``.
        scores: their class scores, ``(N, C)``.
        resamples: how many resamples (0: no interval).
        seed: seeds the resampling (the run's ``--seed``).

    Returns:
        ``{"level", "low", "high", "method", "resamples", "seed"}``, or with ``low`` and ``high``
        ``None`` and a ``reason`` when the metric cannot score a resample.
    """
    shares = metric.per_image(labels, scores)
    if shares is not None:  # the value is a mean over images: resample the per-image shares at once
        return mean_interval(shares, resamples=resamples, seed=seed)
    rows = resampled_rows(len(labels), resamples, seed)
    try:
        values = np.array([float(metric.score(labels[index], scores[index]).value) for index in rows], dtype=np.float64)
    except (XaikitError, TypeError) as error:  # a metric that cannot score a resample (or gives no value)
        return {**_record(resamples, seed, OVER_IMAGES), "low": None, "high": None, "reason": str(error)}
    return _percentiles(values, resamples, seed, OVER_IMAGES)


def mean_interval(values: ArrayLike, *, resamples: int, seed: int, method: str = OVER_IMAGES) -> dict[str, Any]:
    """The 95 % percentile-bootstrap interval of the mean of ``values`` ``(N,)``, resampled as :func:`bootstrap_interval` does.

    A paired comparison passes each image's difference between two runs, so both runs are scored on
    the same resampled images; ``xaikit bench`` passes a metric's unit values with ``method`` :data:`OVER_UNITS`.

    Args:
        values: ``(N,)`` numbers (a sequence, a numpy array or a CPU tensor), ``N >= 1``.
        resamples: how many resamples, at least 1.
        seed: seeds the resampling.
        method: what was resampled, recorded as the interval's ``method``.
    """
    values = np.asarray(values, dtype=np.float64)
    means = values[resampled_rows(len(values), resamples, seed)].mean(axis=1)  # (R,)
    return _percentiles(means, resamples, seed, method)


def resampled_rows(count: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, count)`` ``int64`` rows drawn with replacement, the same for the same ``seed``.

    Each row index is a 32-bit Mersenne Twister draw modulo ``count``, from numpy's ``RandomState``
    seeded with the seed's low 32 bits: the stream torch's CPU generator gives ``torch.randint``, which
    drew the rows before, so every interval recorded since the first release is reproduced, and numpy
    keeps ``RandomState``'s stream fixed across versions (NEP 19).
    """
    draws = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=(resamples, count), dtype=np.uint64)
    return (draws % count).astype(np.int64)


def _record(resamples: int, seed: int, method: str) -> dict[str, Any]:
    return {"level": LEVEL, "method": method, "resamples": resamples, "seed": seed}


def _percentiles(values: np.ndarray, resamples: int, seed: int, method: str) -> dict[str, Any]:
    """The record of the 2.5th and 97.5th percentiles (linear interpolation) of ``(R,)`` resampled values."""
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]).tolist()
    return {**_record(resamples, seed, method), "low": round(low, 6), "high": round(high, 6)}
