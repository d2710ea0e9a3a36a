"""KLC's decision rule: soft voting over matched prototype parts."""

from __future__ import annotations

import torch

__all__ = ["soft_vote"]


def soft_vote(match_classes: torch.Tensor, num_classes: int, fallback_class: int) -> tuple[torch.Tensor, int, bool]:
    """Score(c) = matched prototype parts of class c / all matched parts, and the predicted class.

    Ties go to the lowest class id (the reference code iterates over ``torch.unique``'s sorted
    labels). A query with no match at all is predicted as ``fallback_class``, the class of its
    top-1 prototype by CLS similarity; the reference code fails there (division by zero, or
    ``max`` of an empty dict), so this rule is xaikit's own, and its scores are one-hot on that class.

    Args:
        match_classes: class of the prototype owning each kept match, ``(M,)`` ``int64``.
        num_classes: ``C``.
        fallback_class: class to predict when ``M == 0``.

    Returns:
        ``scores`` ``(C,)`` float32 summing to 1, the predicted class, and whether the fallback was used.
    """
    votes = torch.bincount(match_classes.long(), minlength=num_classes)[:num_classes].float()
    total = votes.sum()
    if total == 0:
        scores = torch.zeros(num_classes)
        scores[fallback_class] = 1.0
        return scores, int(fallback_class), True
    scores = votes / total
    return scores, int(torch.argmax(scores)), False  # argmax returns the first (lowest) maximal index
