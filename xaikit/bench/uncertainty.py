"""Confidence intervals for prediction metrics: a seeded percentile bootstrap over the evaluated images.

Huang et al.'s metrics and accuracy are reported on a few hundred to a few thousand images; on 200
images one image is 0.5 points, so a difference between two runs means little without an interval.
:func:`bootstrap_interval` resamples the images with replacement ``resamples`` times (seeded, so a
resumed run reports the same interval), scores each resample and takes the 2.5th and 97.5th
percentiles of the headline value (Efron's percentile interval). A metric whose value is a mean over
images (:meth:`~xaikit.PredictionMetric.per_image`, e.g. accuracy) is resampled in one vectorised
step; any other :class:`~xaikit.PredictionMetric`, a plugin's too, is scored once per resample.
"""

from __future__ import annotations

from typing import Any

import torch

from xaikit.errors import XaikitError
from xaikit.interfaces import PredictionMetric

__all__ = ["LEVEL", "bootstrap_interval", "mean_interval"]

LEVEL = 0.95
"""The confidence level of every interval."""


def bootstrap_interval(metric: PredictionMetric, labels: torch.Tensor, scores: torch.Tensor, *, resamples: int, seed: int) -> dict[str, Any]:
    """The 95 % percentile-bootstrap interval of ``metric``'s value, as recorded in ``summary.json``.

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
    rows = _resampled_rows(len(labels), resamples, seed)
    try:
        values = torch.tensor([float(metric.score(labels[index], scores[index]).value) for index in rows], dtype=torch.float64)
    except (XaikitError, TypeError) as error:  # a metric that cannot score a resample (or gives no value)
        return {**_record(resamples, seed), "low": None, "high": None, "reason": str(error)}
    return _percentiles(values, resamples, seed)


def mean_interval(values: torch.Tensor, *, resamples: int, seed: int) -> dict[str, Any]:
    """The 95 % percentile-bootstrap interval of the mean of ``values`` ``(N,)``, resampled as :func:`bootstrap_interval` does.

    A paired comparison passes each image's difference between two runs, so both runs are scored on
    the same resampled images.
    """
    means = values.double()[_resampled_rows(len(values), resamples, seed)].mean(dim=1)  # (R,)
    return _percentiles(means, resamples, seed)


def _resampled_rows(count: int, resamples: int, seed: int) -> torch.Tensor:
    """``(resamples, count)`` image rows drawn with replacement from a generator seeded with ``seed``."""
    return torch.randint(0, count, (resamples, count), generator=torch.Generator().manual_seed(seed))


def _record(resamples: int, seed: int) -> dict[str, Any]:
    return {"level": LEVEL, "method": "percentile bootstrap over images", "resamples": resamples, "seed": seed}


def _percentiles(values: torch.Tensor, resamples: int, seed: int) -> dict[str, Any]:
    low, high = torch.quantile(values, torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=torch.float64)).tolist()
    return {**_record(resamples, seed), "low": round(low, 6), "high": round(high, 6)}
