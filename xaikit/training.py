"""What ``xaikit train`` asks of an explainer that learns: the :class:`Trainable` interface and its progress events.

An explainer that trains (IVPT) subclasses both :class:`~xaikit.Explainer` and :class:`Trainable`.
``xaikit train`` builds it like ``xaikit bench`` does, calls :meth:`Trainable.train` with a run
directory, then evaluates it on the test split; ``xaikit bench --option checkpoint=DIR`` loads the
result. Under ``torchrun`` every process runs the same command; :class:`~xaikit.distributed.Distributed` says
which one writes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from xaikit.interfaces import Dataset

__all__ = ["TrainProgress", "Trainable"]


class TrainProgress:
    """Receives training events; the default ignores them (``xaikit train`` shows a bar with the loss terms)."""

    def start(self, epochs: int, steps: int, first_epoch: int) -> None:
        """Training begins at ``first_epoch`` (0, or later when resumed) of ``epochs``, ``steps`` steps each."""

    def step(self, terms: Mapping[str, float]) -> None:
        """One optimiser step is done; ``terms`` are its loss terms (and ``total``) on this process."""

    def epoch(self, epoch: int, means: Mapping[str, float]) -> None:
        """Epoch ``epoch`` (0-based) is done and checkpointed; ``means`` averages its terms over steps and processes."""

    def finish(self) -> None:
        """Training is over."""


class Trainable(ABC):
    """An explainer with parameters to learn, which ``xaikit train`` can train.

    Attributes:
        presets: named recipes for ``xaikit train --preset NAME``: ``{"backbone": name,
            "options": {kind: {key: value}}}``, where ``kind`` is ``dataset``, ``backbone`` or
            ``explainer``. Command-line flags and options override a preset's values.
        run_files: names of the files :meth:`train` writes into ``out`` (its checkpoints); they are
            the only files of the explainer's that ``xaikit train --overwrite`` may delete.
    """

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    run_files: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def train(
        self,
        dataset: Dataset,
        out: Path | None = None,
        *,
        resume: bool = False,
        progress: TrainProgress | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train on ``dataset`` and return one dict of mean loss terms per epoch.

        Args:
            dataset: the training split.
            out: a run directory to checkpoint into after every epoch (``None``: keep it in memory).
            resume: continue from the checkpoint in ``out``.
            progress: receives training events.
            record: how the run's components were built (names and options), stored with each
                checkpoint so that loading it can rebuild them.
        """
