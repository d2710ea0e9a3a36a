"""IVPT checkpoints: one safetensors file with the model, the optimiser state and JSON metadata.

Nothing is pickled. The trainable parameters are stored as ``model.<name>``, Adam's moment tensors
as ``optimizer.<index>.<key>``; the optimiser's hyper-parameters, the scheduler state, the epoch,
the architecture, the backbone's identity, the class names and the training history travel as
JSON strings in the safetensors header. One file per checkpoint, written atomically, so an
interrupted write never leaves a model and an optimiser state from different epochs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xaikit.errors import XaikitError
from xaikit.io import write_bytes_atomically

__all__ = ["CHECKPOINT_FILE", "FORMAT", "Checkpoint", "checkpoint_path", "load_checkpoint", "save_checkpoint"]

FORMAT = "xaikit-ivpt/1"
CHECKPOINT_FILE = "checkpoint.safetensors"
"""The checkpoint's name inside a training run directory."""


@dataclass
class Checkpoint:
    """What a checkpoint holds.

    Attributes:
        model: the IVPT module's state dict (trainable parameters only; the ViT is the backbone's).
        metadata: JSON-serialisable facts: ``epoch``, ``architecture``, ``backbone``, ``classes``,
            ``history``, ``hierarchy``, ``settings`` (whatever the writer stored).
        optimizer: the optimiser's state dict, or ``None`` for a model-only checkpoint.
        scheduler: the learning-rate scheduler's state dict, or ``None``.
    """

    model: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file of a run directory (``runs/NAME``), or ``path`` itself when it is a file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically."""
    from safetensors.torch import save

    tensors = {f"model.{key}": value.detach().cpu().contiguous() for key, value in checkpoint.model.items()}
    header: dict[str, str] = {"format": FORMAT, "metadata": json.dumps(checkpoint.metadata)}
    if checkpoint.optimizer is not None:
        for index, state in checkpoint.optimizer["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        header["optimizer"] = json.dumps(checkpoint.optimizer["param_groups"])
    if checkpoint.scheduler is not None:
        header["scheduler"] = json.dumps(checkpoint.scheduler)
    write_bytes_atomically(Path(path), save(tensors, metadata=header))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (a file, or a run directory holding one).

    Raises:
        XaikitError: the file is missing, unreadable or not an xaikit IVPT checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    file = checkpoint_path(path)
    if not file.is_file():
        raise XaikitError(f"no IVPT checkpoint at {path} (expected a run directory with {CHECKPOINT_FILE}, or the file itself)")
    try:
        with safe_open(str(file), framework="pt") as opened:
            header = opened.metadata() or {}
            tensors = {key: opened.get_tensor(key) for key in opened.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError) as error:
        raise XaikitError(f"{file} is not a readable safetensors checkpoint: {error}") from None
    if header.get("format") != FORMAT:
        raise XaikitError(f"{file} is not an xaikit IVPT checkpoint (format {header.get('format')!r}, expected {FORMAT})")
    try:
        metadata = _checked_metadata(json.loads(header["metadata"]))
        model = {key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")}
        optimizer = None
        if "optimizer" in header:
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            optimizer = {"state": state, "param_groups": json.loads(header["optimizer"])}
        scheduler = json.loads(header["scheduler"]) if "scheduler" in header else None
    except (KeyError, ValueError, TypeError) as error:
        raise XaikitError(f"{file} is an IVPT checkpoint with missing or garbled metadata ({type(error).__name__}: {error}); train it again") from None
    return Checkpoint(model=model, metadata=metadata, optimizer=optimizer, scheduler=scheduler)


def _checked_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` if it holds what loading reads: ``epoch``, ``classes``, ``architecture`` and ``backbone``.

    Raises:
        ValueError: naming the first entry that is missing or of the wrong kind.
    """
    if not isinstance(metadata, dict):
        raise ValueError("the metadata is not a JSON object")
    epoch, classes, architecture = metadata.get("epoch"), metadata.get("classes"), metadata.get("architecture")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError("'epoch' is not an integer")
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise ValueError("'classes' is not a list of class names")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("prototypes"), list) or not architecture["prototypes"]:
        raise ValueError("'architecture' does not list its prototype sets")
    backbone = metadata.get("backbone")
    if backbone is not None and not (isinstance(backbone, dict) and isinstance(backbone.get("name"), str) and isinstance(backbone.get("options", {}), dict)):
        raise ValueError("'backbone' is not a name with options")
    return metadata
