"""Which test images a benchmark run evaluates, and in which order."""

from __future__ import annotations

import random

__all__ = ["REFERENCE_SEED", "sample_indices"]

REFERENCE_SEED = 31
"""The seed of KLC's reference evaluation: ``random.seed(31); random.sample(range(5794), 1000)``."""


def sample_indices(count: int, limit: int | None, seed: int = REFERENCE_SEED) -> list[int]:
    """Positions of the images to evaluate among ``count`` test images.

    With ``limit`` smaller than ``count``, the draw is Python's ``random.sample(range(count), limit)``
    after seeding with ``seed``, in the order it returns, exactly as KLC's reference code drew its
    1000 CUB test images (``--limit 1000 --seed 31`` over the test split in ``images.txt`` order).
    Otherwise every image, in dataset order.

    Raises:
        ValueError: ``limit`` is not positive.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    if limit is None or limit >= count:
        return list(range(count))
    return random.Random(seed).sample(range(count), limit)
