"""A linear probe on CLS features: multinomial logistic regression fitted by full-batch L-BFGS.

The probe is the classifier the baseline explainers explain. It is fitted once, in memory, on the
(cached) CLS features of the training images; the backbone stays frozen. The objective is convex and
the weights start at zero, so a fit is deterministic: the same features give the same probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.validation import integer_option, number_option

__all__ = ["LinearProbe", "check_probe_options", "fit_probe"]


@dataclass(eq=False)
class LinearProbe:
    """Class scores ``W f + b`` of a CLS feature ``f``, L2-normalised first when ``normalize``.

    Attributes:
        weight: ``(C, D)`` float32.
        bias: ``(C,)`` float32.
        normalize: divide each feature by its L2 norm before the linear map.
        train_accuracy: top-1 accuracy on the features it was fitted on, in ``[0, 1]``.
        loss: the final value of the objective (cross-entropy plus the weight-decay term).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    normalize: bool
    train_accuracy: float = float("nan")
    loss: float = float("nan")

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` of features ``(B, D)``; differentiable in ``features``."""
        features = features.float()
        if self.normalize:
            features = F.normalize(features, dim=-1)
        return features @ self.weight.to(features.device).T + self.bias.to(features.device)

    @property
    def num_classes(self) -> int:
        """``C``."""
        return self.weight.shape[0]

    def to(self, device: torch.device | str) -> LinearProbe:
        """This probe with its tensors on ``device``."""
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self


def check_probe_options(*, epochs: Any, lr: Any, weight_decay: Any) -> None:
    """Refuse probe options out of range with one sentence.

    Raises:
        XaikitError: ``epochs`` is not an integer of at least 1, ``lr`` not a positive number, or
            ``weight_decay`` not a number of at least 0.
    """
    integer_option("epochs", epochs, 1)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise XaikitError(f"option lr must be a positive number, got {lr!r}")
    number_option("weight_decay", weight_decay, 0.0, math.inf)


def fit_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    normalize: bool = True,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-4,
) -> LinearProbe:
    """Fit a multinomial logistic regression on ``features`` by full-batch L-BFGS.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not decayed), starting
    from zero weights, with ``epochs`` L-BFGS iterations (strong-Wolfe line search, step ``lr``). The
    computation runs on the CPU in float32.

    Args:
        features: ``(N, D)`` CLS features of the training images.
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: ``C``; classes without a training image get zero weights and a low bias.
        normalize: L2-normalise the features first (cosine geometry, as retrieval uses).
        epochs: L-BFGS iterations over the whole training set.
        lr: L-BFGS step size (1 is the natural step with a line search).
        weight_decay: L2 penalty on the weights.

    Raises:
        XaikitError: an option out of range, or features and labels that do not fit together.
    """
    check_probe_options(epochs=epochs, lr=lr, weight_decay=weight_decay)
    features = features.detach().float().cpu()
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise XaikitError(f"the probe needs features (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise XaikitError(f"the probe got labels outside 0..{num_classes - 1}")
    inputs = F.normalize(features, dim=-1) if normalize else features
    weight = torch.zeros(num_classes, inputs.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(inputs @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
        loss = float(objective().detach())
    weight, bias = weight.detach(), bias.detach()
    accuracy = float(((inputs @ weight.T + bias).argmax(dim=1) == labels).float().mean())
    return LinearProbe(weight=weight, bias=bias, normalize=normalize, train_accuracy=accuracy, loss=loss)
