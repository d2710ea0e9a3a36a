"""Toy components that need no model: stand-ins for the kinds a component under test works with.

A metric's tests need an explainer; an explainer that takes a segmenter needs a segmenter that works
on bare pixels. These are small, real implementations of the interfaces (they pass their own
contract suites), meant for such tests, not for research.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError
from xaikit.interfaces import Capability, Dataset, Explainer, Segmenter
from xaikit.testing.fixtures import image_batch
from xaikit.types import Explanation, PartMap, Sample

__all__ = ["ToyExplainer", "ToySegmenter"]


class ToySegmenter(Segmenter):
    """Splits every image into its top and bottom halves, labels 1 (``"top"``) and 2 (``"bottom"``).

    Needs nothing but the pixels' positions, so it segments any image, annotated or not.
    """

    vocabulary = ("top", "bottom")

    @property
    def fingerprint(self) -> str:
        """The output depends on nothing but the image size."""
        return "toy-halves-1"

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One two-part map per sample; the top half holds ``ceil(H / 2)`` rows."""
        maps = []
        for sample in samples:
            height, width = sample.size
            rows = torch.where(torch.arange(height) < (height + 1) // 2, 1, 2)  # (H,)
            maps.append(PartMap(labels=rows[:, None].expand(height, width).clone(), names={1: "top", 2: "bottom"}))
        return maps


_ALL_CAPABILITIES = frozenset(Capability)


class ToyExplainer(Explainer):
    """Classifies by colour: one concept per class, the closeness of each image cell to the class's colour.

    :meth:`fit` stores the mean colour of each class's training images. An image is resized to
    ``size x size`` and average-pooled to a ``grid x grid`` map of cell colours; concept ``c`` at a
    cell is ``exp(-4 d^2)`` in ``(0, 1]``, ``d`` the distance between the cell's colour and class
    ``c``'s, and the score of class ``c`` is the concept's maximum over the cells, so :meth:`forward`
    is differentiable.

    Args:
        capabilities: what the explainer claims; leave a capability out to get an explainer that
            lacks it (its method then raises :class:`~xaikit.CapabilityError`), e.g. to test that a
            metric refuses it. Predictions are always included.
        grid: side of the concept grid.
        size: side images are resized to by :meth:`explain`.
    """

    def __init__(self, capabilities: Iterable[Capability] = _ALL_CAPABILITIES, grid: int = 4, size: int = 32) -> None:
        self.capabilities = frozenset(capabilities) | {Capability.PREDICTIONS}
        self.grid = int(grid)
        self.size = int(size)
        self.classes: tuple[str, ...] = ()
        self.colours: torch.Tensor | None = None

    def fit(self, dataset: Dataset) -> ToyExplainer:
        """Store the mean colour of each class's images, ``(C, 3)`` in ``[0, 1]`` (grey for a class without images)."""
        self.classes = tuple(dataset.classes)
        sums = torch.zeros(len(self.classes), 3, dtype=torch.float64)
        counts = torch.zeros(len(self.classes), dtype=torch.float64)
        for sample in dataset:
            sums[sample.label] += torch.from_numpy(sample.image.reshape(-1, 3).mean(axis=0) / 255)
            counts[sample.label] += 1
        self.colours = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], torch.full_like(sums, 0.5)).float()
        return self

    @property
    def concept_names(self) -> tuple[str, ...] | None:
        """``"<class> colour"`` for every class, when the explainer has concept maps."""
        return tuple(f"{name} colour" for name in self.classes) if Capability.CONCEPT_MAPS in self.capabilities else None

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, grid, grid)``: closeness in ``(0, 1]`` of each cell's colour to each class's."""
        if self.colours is None:
            raise XaikitError("the toy explainer is not fitted: call fit(train_dataset) first")
        cells = F.adaptive_avg_pool2d(images.float(), self.grid)  # (B, 3, g, g)
        squared = ((cells[:, None] - self.colours.to(images.device)[None, :, :, None, None]) ** 2).sum(dim=2)
        return torch.exp(-4 * squared)

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Predict the class whose colour some cell matches best; details name that cell."""
        with torch.no_grad():
            maps = self._maps(image_batch(samples, self.size))
        scores = maps.flatten(2).amax(dim=2)  # (B, C)
        predictions = scores.argmax(dim=1)
        cells = maps[torch.arange(len(samples)), predictions].flatten(1).argmax(dim=1)
        details = [{"cell": [int(cell) // self.grid, int(cell) % self.grid]} for cell in cells]
        has_maps = Capability.CONCEPT_MAPS in self.capabilities
        return Explanation(
            predictions=predictions, scores=scores, concept_maps=maps if has_maps else None,
            concept_names=self.concept_names, details=details,
        )

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, grid, grid)`` colour closeness; raises CapabilityError when not claimed."""
        if Capability.CONCEPT_MAPS not in self.capabilities:
            return super().concept_maps(images)
        return self._maps(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable class scores ``(B, C)``; raises CapabilityError when not claimed."""
        if Capability.DIFFERENTIABLE not in self.capabilities:
            return super().forward(images)
        return self._maps(images).flatten(2).amax(dim=2)
