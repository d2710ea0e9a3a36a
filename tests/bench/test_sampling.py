"""The evaluation sample: KLC's reference draw, reproduced exactly."""

from __future__ import annotations

import random

import pytest

from xaikit.bench.sampling import REFERENCE_SEED, sample_indices


def test_reference_sample_equals_seeding_the_global_generator():
    state = random.getstate()
    try:
        random.seed(31)
        expected = random.sample(range(5794), 1000)
    finally:
        random.setstate(state)
    assert sample_indices(5794, 1000, REFERENCE_SEED) == expected
    assert expected[:5] == [100, 3846, 920, 3218, 1153]  # the indices printed by the reference notebook


def test_no_limit_or_a_large_limit_keeps_dataset_order():
    assert sample_indices(5, None) == [0, 1, 2, 3, 4]
    assert sample_indices(5, 9) == [0, 1, 2, 3, 4]


def test_bad_limit():
    with pytest.raises(ValueError, match="positive"):
        sample_indices(5, 0)
