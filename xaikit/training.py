"""What ``xaikit train`` asks of an explainer that learns: the :class:`Trainable` interface, progress events, processes.

An explainer that trains (IVPT) subclasses both :class:`~xaikit.Explainer` and :class:`Trainable`.
``xaikit train`` builds it like ``xaikit bench`` does, calls :meth:`Trainable.train` with a run
directory, then evaluates it on the test split; ``xaikit bench --option checkpoint=DIR`` loads the
result. Under ``torchrun`` every process runs the same command; :class:`Distributed` says which one
writes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from xaikit.interfaces import Dataset

__all__ = ["Distributed", "TrainProgress", "Trainable"]


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


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run.

    Attributes:
        rank: the process index; rank 0 writes files and shows progress.
        world: the number of processes.
        local_rank: the process index on this machine (its CUDA device under ``torchrun``).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """The process group ``torchrun`` describes (``WORLD_SIZE > 1``), initialised on first use; one process otherwise.

        The backend is nccl when CUDA is available, gloo otherwise.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for in a single process)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()


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
