"""Top-1 and top-5 classification accuracy."""

from __future__ import annotations

import torch

from xaikit.errors import XaikitError
from xaikit.interfaces import PredictionMetric
from xaikit.types import MetricResult

__all__ = ["Accuracy", "top_k_correct"]


def top_k_correct(labels: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each true class is among the ``k`` highest scores, ``(N,)`` bool.

    Ties are broken towards the lower class id, as ``argmax`` does for top-1: a class counts as
    within the top ``k`` when fewer than ``k`` classes score strictly higher or score equally with
    a lower id.
    """
    true_score = scores.gather(1, labels.view(-1, 1))  # (N, 1)
    ids = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    ahead = (scores > true_score) | ((scores == true_score) & (ids < labels.view(-1, 1)))
    return ahead.sum(dim=1) < k


class Accuracy(PredictionMetric):
    """Top-1 accuracy in percent (the headline value), with top-5 in the details.

    Args:
        top: the ``k`` values reported in the details (the first one is the headline value).
    """

    name = "accuracy"
    higher_is_better = True

    def __init__(self, top: list[int] | tuple[int, ...] = (1, 5)) -> None:
        self.top = tuple(int(k) for k in top)
        if not self.top or min(self.top) < 1:
            raise XaikitError(f"accuracy needs top-k values of at least 1, got {list(top)}")

    def per_image(self, labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """100 for each image whose class is within the headline top ``k``, else 0, ``(N,)`` float64."""
        return 100.0 * top_k_correct(labels, scores, self.top[0]).double()

    def score(self, labels: torch.Tensor, scores: torch.Tensor) -> MetricResult:
        """Percent of images whose class is the top prediction (and within the top ``k`` for each ``k``)."""
        if labels.numel() == 0:
            raise XaikitError("accuracy needs at least one scored image")
        values = {f"top{k}": 100.0 * top_k_correct(labels, scores, k).double().mean().item() for k in self.top}
        return MetricResult(
            name=self.name, value=values[f"top{self.top[0]}"], higher_is_better=True,
            details={**values, "images": int(labels.numel())},
        )
