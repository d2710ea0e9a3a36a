"""This process's place under ``torchrun``: rank, world size, its GPU, and the few collectives xaikit needs.

``xaikit train`` (data-parallel training) and ``xaikit bench`` / ``xaikit features`` (test images and
feature extraction sharded across processes) read :meth:`Distributed.from_environment`. Without
``torchrun`` (``WORLD_SIZE`` unset or 1) every method is a no-op for one process, and torch is not
even imported.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["TIMEOUT", "Distributed"]

TIMEOUT = datetime.timedelta(hours=24)
"""How long a process waits in a collective. Long on purpose: the other processes of ``xaikit bench``
wait while process 0 fits the explainer (hours for a full gallery behind a part segmenter), and a
failed process never leaves the others waiting, because ``torchrun`` stops all of them when one exits
with an error."""


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
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        """Whether more than one process runs."""
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files and shows progress."""
        return self.rank == 0

    def select_device(self, requested: str) -> str:
        """Under ``torchrun`` on CUDA, make this process's GPU (its local rank) the current one.

        Returns ``cuda:<local rank>`` in that case (for ``requested`` ``auto`` or ``cuda``), else
        ``requested``. Once it is current, a plain ``cuda`` (or ``auto``) also means this GPU, so a
        caller may keep the requested name, e.g. to record it.
        """
        if not self.active or requested not in ("auto", "cuda"):
            return requested
        import torch

        if not torch.cuda.is_available():
            return requested
        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for in a single process)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: Any = None) -> Any:
        """Process 0's ``value``, in every process (the others' ``value`` is ignored); ``value`` itself in one process.

        The value travels pickled between the processes of this run, so it may be any picklable
        object, an exception included.
        """
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.writes else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, count: int) -> range:
        """The positions ``rank, rank + world, ...`` of ``count`` items that this process takes."""
        return range(self.rank, count, self.world)
