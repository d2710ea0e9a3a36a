"""The mnn and cosine matchers: hand-worked examples, ties, thresholds and the registry path."""

from __future__ import annotations

import pytest
import torch

import xaikit
from xaikit.errors import XaikitError
from xaikit_matchers.cosine import MutualNearestNeighbours, NearestNeighbour, cosine_similarity


def unit(*angles_degrees: float) -> torch.Tensor:
    """2-D unit vectors at the given angles, one per row."""
    radians = torch.deg2rad(torch.tensor(angles_degrees))
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1)


def test_mnn_hand_worked_example():
    # query at 0, 50, 100 degrees; candidates at 10, 40, 45, 170 degrees.
    # nearest candidate of each query: 0->10 (c0), 50->45 (c2), 100->45 (c2)
    # nearest query of each candidate: c0(10)->0 (q0), c1(40)->50 (q1), c2(45)->50 (q1), c3(170)->100 (q2)
    # mutual: (q0, c0) and (q1, c2); q2 points at c2, which prefers q1.
    match = MutualNearestNeighbours().match(unit(0, 50, 100), unit(10, 40, 45, 170))
    assert match.query.tolist() == [0, 1]
    assert match.candidate.tolist() == [0, 2]
    assert torch.allclose(match.similarity, torch.cos(torch.deg2rad(torch.tensor([10.0, 5.0]))))


def test_mnn_scale_invariant_and_min_similarity():
    query, candidates = unit(0, 50, 100) * 7, unit(10, 40, 45, 170) * 0.1
    assert MutualNearestNeighbours().match(query, candidates).query.tolist() == [0, 1]
    strict = MutualNearestNeighbours(min_similarity=0.99).match(query, candidates)
    assert strict.query.tolist() == [1]  # cos 5 deg = 0.996 survives, cos 10 deg = 0.985 does not


def test_mnn_ties_go_to_the_lowest_index_and_pairs_are_one_to_one():
    query = unit(0, 0)  # two identical query rows
    candidates = unit(0, 0, 90)
    match = MutualNearestNeighbours().match(query, candidates)
    assert match.query.tolist() == [0] and match.candidate.tolist() == [0]


def test_mnn_pairs_are_mutual_on_random_data():
    generator = torch.Generator().manual_seed(0)
    query, candidates = torch.randn(30, 8, generator=generator), torch.randn(50, 8, generator=generator)
    match = MutualNearestNeighbours().match(query, candidates)
    similarity = cosine_similarity(query, candidates)
    assert len(match) > 0
    assert (similarity[match.query].argmax(dim=1) == match.candidate).all()
    assert (similarity[:, match.candidate].argmax(dim=0) == match.query).all()
    assert len(set(match.candidate.tolist())) == len(match)


def test_nearest_neighbour_is_one_way_with_a_threshold():
    match = NearestNeighbour(threshold=0.0).match(unit(0, 50, 100), unit(10, 40, 45, 170))
    assert match.query.tolist() == [0, 1, 2] and match.candidate.tolist() == [0, 2, 2]
    assert NearestNeighbour(threshold=0.999).match(unit(0, 50, 100), unit(10, 40, 45, 170)).query.tolist() == []


@pytest.mark.parametrize("matcher", [MutualNearestNeighbours(), NearestNeighbour()])
def test_empty_inputs_give_no_pairs(matcher):
    assert len(matcher.match(torch.zeros(0, 4), torch.randn(3, 4))) == 0
    assert len(matcher.match(torch.randn(3, 4), torch.zeros(0, 4))) == 0


def test_bad_inputs_are_refused():
    with pytest.raises(XaikitError, match="must be a cosine similarity"):
        NearestNeighbour(threshold=2)
    with pytest.raises(XaikitError, match=r"\(n, D\) and \(m, D\)"):
        MutualNearestNeighbours().match(torch.zeros(3, 4), torch.zeros(3, 5))


def test_created_by_name():
    assert isinstance(xaikit.create("matcher", "mnn", min_similarity=0.5), MutualNearestNeighbours)
    assert xaikit.create("matcher", "cosine", threshold=0.2).threshold == 0.2
