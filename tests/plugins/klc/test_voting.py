"""KLC's soft vote: shares of matched parts, ties to the lowest class, the zero-match fallback."""

from __future__ import annotations

import torch

from xaikit_klc.voting import soft_vote


def test_scores_are_shares_of_matched_parts():
    scores, prediction, fallback = soft_vote(torch.tensor([2, 2, 0, 2]), 4, fallback_class=1)
    assert torch.allclose(scores, torch.tensor([0.25, 0.0, 0.75, 0.0]))
    assert prediction == 2 and not fallback


def test_ties_go_to_the_lowest_class_id():
    _, prediction, _ = soft_vote(torch.tensor([3, 1, 3, 1]), 5, fallback_class=4)
    assert prediction == 1


def test_no_match_falls_back_to_the_top_prototype_class():
    scores, prediction, fallback = soft_vote(torch.zeros(0, dtype=torch.int64), 3, fallback_class=2)
    assert fallback and prediction == 2
    assert scores.tolist() == [0.0, 0.0, 1.0]
