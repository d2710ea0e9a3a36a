"""Matchers under cosine similarity: mutual nearest neighbours and one-way nearest neighbours.

Both compute the full ``(n, m)`` cosine-similarity matrix in one matrix product and select pairs
with tensor operations; nothing loops over descriptors or pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.interfaces import Matcher
from xaikit.types import Match

__all__ = ["MutualNearestNeighbours", "NearestNeighbour", "cosine_similarity"]


def cosine_similarity(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query row to every candidate row.

    Args:
        query: ``(n, D)`` descriptors.
        candidates: ``(m, D)`` descriptors.

    Returns:
        ``(n, m)`` float32 similarities in ``[-1, 1]`` (a zero vector has similarity 0 to everything).
    """
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise XaikitError(
            f"matchers need descriptors (n, D) and (m, D), got {tuple(query.shape)} and {tuple(candidates.shape)}"
        )
    return F.normalize(query.float(), dim=1) @ F.normalize(candidates.float(), dim=1).T


def _check_threshold(name: str, value: float | None) -> float | None:
    if value is not None and not -1.0 <= float(value) <= 1.0:
        raise XaikitError(f"{name} must be a cosine similarity in [-1, 1], got {value}")
    return None if value is None else float(value)


def _empty() -> Match:
    empty = torch.zeros(0, dtype=torch.int64)
    return Match(query=empty, candidate=empty.clone(), similarity=torch.zeros(0))


class MutualNearestNeighbours(Matcher):
    """Mutual nearest neighbours ("best buddies", Dekel et al. 2015; KLC's part matching).

    Query row ``i`` and candidate row ``j`` are paired when ``j`` is the most similar candidate of
    ``i`` and ``i`` the most similar query of ``j``. Ties go to the lowest index, so the result is
    deterministic. Each row appears in at most one pair.

    Args:
        min_similarity: drop pairs whose cosine similarity is below this value (``None``: keep all,
            as the KLC reference code does).
    """

    def __init__(self, min_similarity: float | None = None) -> None:
        self.min_similarity = _check_threshold("min_similarity", min_similarity)

    def __repr__(self) -> str:
        return f"MutualNearestNeighbours(min_similarity={self.min_similarity})"

    def match(self, query: torch.Tensor, candidates: torch.Tensor) -> Match:
        """Best-buddy pairs between ``query`` ``(n, D)`` and ``candidates`` ``(m, D)``, ordered by query row."""
        similarity = cosine_similarity(query, candidates)
        if similarity.numel() == 0:
            return _empty()
        best_candidate = similarity.argmax(dim=1)  # (n,)
        best_query = similarity.argmax(dim=0)  # (m,)
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        keep = best_query[best_candidate] == rows
        pair_similarity = similarity[rows, best_candidate]
        if self.min_similarity is not None:
            keep &= pair_similarity >= self.min_similarity
        return Match(query=rows[keep].cpu(), candidate=best_candidate[keep].cpu(), similarity=pair_similarity[keep].cpu())


class NearestNeighbour(Matcher):
    """Each query row to its most similar candidate (one-way; candidates may be used repeatedly).

    Args:
        threshold: keep a pair only when its cosine similarity is at least this value.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = _check_threshold("threshold", threshold)

    def __repr__(self) -> str:
        return f"NearestNeighbour(threshold={self.threshold})"

    def match(self, query: torch.Tensor, candidates: torch.Tensor) -> Match:
        """Nearest-candidate pairs above :attr:`threshold`, ordered by query row."""
        similarity = cosine_similarity(query, candidates)
        if similarity.numel() == 0:
            return _empty()
        best, candidate = similarity.max(dim=1)
        keep = best >= self.threshold
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        return Match(query=rows[keep].cpu(), candidate=candidate[keep].cpu(), similarity=best[keep].cpu())
