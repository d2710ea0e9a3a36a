"""The contract every :class:`~xaikit.Matcher` meets."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.interfaces import Matcher
from xaikit.testing.contracts._base import ComponentContract
from xaikit.types import Match


def _pairs(match: Match) -> dict[tuple[int, int], float]:
    """``(query row, candidate row) -> similarity`` of every pair."""
    return {(q, c): s for q, c, s in zip(match.query.tolist(), match.candidate.tolist(), match.similarity.tolist())}


class MatcherContract(ComponentContract):
    """Subclass as ``TestMyMatcher(MatcherContract)`` and implement :meth:`make_matcher`.

    The default descriptors are 6 random query rows and 5 candidates, four of them noisy copies of
    query rows, so that a matcher finds pairs; override :meth:`make_descriptors` to change them.
    A matcher whose result depends on the order of the rows overrides
    :meth:`test_row_order_only_renumbers_the_pairs` to skip it.
    """

    kind: ClassVar[str] = "matcher"

    def make_matcher(self) -> Matcher:
        """Build the matcher under test."""
        raise NotImplementedError("implement make_matcher() in your MatcherContract subclass")

    def make_descriptors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Query ``(n, D)`` and candidate ``(m, D)`` float32 descriptors."""
        generator = torch.Generator().manual_seed(0)
        query = torch.randn(6, 16, generator=generator)
        copies = query[[4, 1, 3, 0]] + 0.1 * torch.randn(4, 16, generator=generator)
        return query, torch.cat([copies, torch.randn(1, 16, generator=generator)])

    @pytest.fixture(scope="class")
    @classmethod
    def matcher(cls) -> Matcher:
        return cls().make_matcher()

    @pytest.fixture(scope="class")
    @classmethod
    def descriptors(cls) -> tuple[torch.Tensor, torch.Tensor]:
        return cls().make_descriptors()

    @pytest.fixture(scope="class")
    @classmethod
    def match(cls, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor]) -> Match:
        return matcher.match(*descriptors)

    def test_is_a_matcher(self, matcher: Matcher) -> None:
        assert isinstance(matcher, Matcher)

    def test_returns_int64_indices_and_finite_similarities(self, match: Match) -> None:
        assert isinstance(match, Match)
        assert match.query.dtype == torch.int64 and match.candidate.dtype == torch.int64
        assert match.similarity.is_floating_point() and bool(torch.isfinite(match.similarity).all())

    def test_indices_point_at_rows(self, match: Match, descriptors: tuple[torch.Tensor, torch.Tensor]) -> None:
        query, candidates = descriptors
        assert all(0 <= row < len(query) for row in match.query.tolist()), f"query rows {match.query.tolist()} out of range"
        assert all(0 <= row < len(candidates) for row in match.candidate.tolist()), f"candidate rows {match.candidate.tolist()} out of range"

    def test_no_pair_is_repeated(self, match: Match) -> None:
        assert len(_pairs(match)) == len(match)

    def test_similarities_are_what_the_matcher_declares(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor], match: Match) -> None:
        if matcher.similarity != "cosine":
            pytest.skip(f"the matcher declares its own similarity measure, {matcher.similarity!r}")
        query, candidates = descriptors
        expected = F.cosine_similarity(query[match.query], candidates[match.candidate], dim=1)
        torch.testing.assert_close(match.similarity.float(), expected, rtol=1e-4, atol=1e-5, msg="Match.similarity must be the cosine of each pair")

    def test_is_deterministic(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor], match: Match) -> None:
        again = matcher.match(*descriptors)
        assert torch.equal(again.query, match.query) and torch.equal(again.candidate, match.candidate)
        assert torch.equal(again.similarity, match.similarity)

    def test_leaves_the_descriptors_unchanged(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor]) -> None:
        copies = [tensor.clone() for tensor in descriptors]
        matcher.match(*descriptors)
        assert all(torch.equal(tensor, copy) for tensor, copy in zip(descriptors, copies))

    def test_nothing_to_match_gives_no_pairs(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor]) -> None:
        query, candidates = descriptors
        assert len(matcher.match(query[:0], candidates)) == 0
        assert len(matcher.match(query, candidates[:0])) == 0

    def test_row_order_only_renumbers_the_pairs(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor], match: Match) -> None:
        query, candidates = descriptors
        query_order, candidate_order = torch.randperm(len(query), generator=torch.Generator().manual_seed(1)), torch.arange(len(candidates)).flip(0)
        shuffled = _pairs(matcher.match(query[query_order], candidates[candidate_order]))
        renumbered = {(int(query_order[q]), int(candidate_order[c])): s for (q, c), s in shuffled.items()}
        expected = _pairs(match)
        assert renumbered.keys() == expected.keys(), "reordering the rows changed which rows are paired"
        assert all(abs(renumbered[pair] - expected[pair]) <= 1e-5 for pair in expected)

    def test_descriptors_of_different_dimensions_are_refused(self, matcher: Matcher, descriptors: tuple[torch.Tensor, torch.Tensor]) -> None:
        query, candidates = descriptors
        with pytest.raises((XaikitError, ValueError, RuntimeError)):
            matcher.match(query, candidates[:, :-1])
