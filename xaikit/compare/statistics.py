"""The statistics of a comparison: a paired test of two runs' accuracy on the same images, and per-class accuracy.

Two runs evaluated on the same images are compared on each image's top-1 correctness:

- the **paired bootstrap** resamples the images once per resample and scores both runs on the same
  resample, giving a 95 % percentile interval of the accuracy difference. It is
  :func:`xaikit.bench.uncertainty.mean_interval`, the resampling behind every ``summary.json`` interval,
  applied to each image's difference of correctness (seeded);
- **McNemar's exact test** (McNemar, 1947) looks only at the discordant images: ``b`` that run A
  gets right and run B wrong, ``c`` the reverse. Under the null hypothesis of equal accuracy each
  discordant image is a fair coin, so ``b ~ Binomial(b + c, 1/2)``, and the two-sided p-value is
  ``min(1, 2 * P(X <= min(b, c)))``, summed exactly over the binomial's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaikit.bench.uncertainty import mean_interval

__all__ = ["PairedTest", "mcnemar_exact", "paired_test", "per_class_accuracy"]


@dataclass(frozen=True)
class PairedTest:
    """Run A against run B on the same images.

    Attributes:
        images: how many images both runs evaluated.
        difference: A's top-1 accuracy minus B's, in percentage points.
        low, high: the paired bootstrap's 95 % interval of ``difference`` (``None`` without resamples).
        a_only: images A classifies correctly and B does not (McNemar's ``b``).
        b_only: images B classifies correctly and A does not (McNemar's ``c``).
        p_value: McNemar's exact two-sided p-value.
    """

    images: int
    difference: float
    low: float | None
    high: float | None
    a_only: int
    b_only: int
    p_value: float


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts ``b`` (``a_only``) and ``c`` (``b_only``).

    ``min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c))``, the binomial terms summed in log space
    (``log C(n, i)`` as a cumulative sum of ``log((n - j + 1) / j)``, then a log-sum-exp, in float64), so
    that thousands of discordant images neither overflow nor underflow. No discordant image gives 1.
    """
    total, low = a_only + b_only, min(a_only, b_only)
    if total == 0:
        return 1.0
    j = np.arange(1, low + 1, dtype=np.float64)
    log_binomials = np.concatenate([[0.0], np.cumsum(np.log(total - j + 1) - np.log(j))])  # (low + 1,) log C(n, i)
    log_terms = log_binomials - total * np.log(2.0)
    top = log_terms.max()
    return min(1.0, 2.0 * float(np.exp(top + np.log(np.exp(log_terms - top).sum()))))


def paired_test(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int, seed: int) -> PairedTest:
    """Compare two runs' top-1 correctness on the same images (aligned rows).

    Args:
        correct_a, correct_b: ``(N,)`` bool, whether each run classified each common image correctly.
        resamples: resamples of the paired bootstrap (0: no interval).
        seed: seeds the resampling, as ``--seed`` seeds ``xaikit bench``'s intervals.
    """
    difference = 100.0 * (correct_a.astype(np.float64) - correct_b.astype(np.float64))  # (N,) each image's share, in points
    interval = mean_interval(difference, resamples=resamples, seed=seed) if resamples else {}
    a_only = int(np.count_nonzero(correct_a & ~correct_b))
    b_only = int(np.count_nonzero(correct_b & ~correct_a))
    return PairedTest(
        images=len(difference), difference=round(float(difference.mean()), 6),
        low=interval.get("low"), high=interval.get("high"),
        a_only=a_only, b_only=b_only, p_value=mcnemar_exact(a_only, b_only),
    )


def per_class_accuracy(labels: np.ndarray, correct: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 accuracy per class, in percent.

    Args:
        labels: ``(N,)`` int64 true classes.
        correct: ``(N,)`` bool top-1 correctness.
        classes: the number of classes ``C``.

    Returns:
        ``(C,)`` float64 accuracies (NaN for a class without images) and ``(C,)`` int64 image counts.
    """
    counts = np.bincount(labels, minlength=classes)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=classes)
    return np.divide(100.0 * hits, counts, out=np.full(classes, np.nan), where=counts > 0), counts
