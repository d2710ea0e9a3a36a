"""Helpers for segmenters whose code the user installs: a source checkout, its checkpoint, digests.

VLPart, SAN and OV-PARTS are research repositories, not packages: the user clones one, builds
detectron2, downloads a checkpoint and passes their paths. These helpers turn each missing piece
into one sentence that says what to install or pass, identify files for fingerprints, and load
checkpoints without unpickling them: detectron2's own checkpointer unpickles ``.pkl`` files (and,
before torch 2.6, anything), so a downloaded file could run code. :func:`read_weights` reads a
checkpoint with ``torch.load(weights_only=True)`` and refuses anything else unless the user passes
``trust_pickle=true``; :func:`weights_loader` hands the tensors to the model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import pickle
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError

__all__ = [
    "Setup",
    "UnsafeCheckpointError",
    "checkpoint",
    "config_file",
    "file_digest",
    "import_module",
    "read_weights",
    "source_root",
    "spec_digest",
    "weights_loader",
]

_log = logging.getLogger(__name__)


class UnsafeCheckpointError(XaikitError):
    """A checkpoint that can only be read by unpickling it, which runs whatever code the file names."""


@dataclass(frozen=True)
class Setup:
    """What a user-installed segmenter needs, shared by its adapter and ``xaikit doctor``.

    Attributes:
        segmenter: the registered name (``"vlpart"``).
        package: the folder a checkout holds (``"vlpart"``), see :func:`source_root`.
        clone: where the checkout comes from.
        config: the default config, relative to the checkout.
        download: where to get a checkpoint, for :func:`checkpoint`'s message.
        files: other files the checkout must hold, relative to it (VLPart's built-in classifier).
        modules: ``(module, pip install arguments)`` for each package the real code imports.
        cuda: whether the real code runs only on CUDA.
    """

    segmenter: str
    package: str
    clone: str
    config: str
    download: str
    files: tuple[str, ...] = ()
    modules: tuple[tuple[str, str], ...] = ()
    cuda: bool = False


def source_root(path: str | None, package: str, segmenter: str, clone: str) -> Path:
    """The checkout at ``path``, verified to hold ``package`` and put first on ``sys.path``.

    Raises:
        XaikitError: no path, or a directory without ``package`` (says where to clone from).
    """
    if not path:
        raise XaikitError(f"segmenter '{segmenter}' needs source=DIR, a checkout of {clone}")
    root = Path(path).expanduser().resolve()
    if not (root / package).is_dir():
        raise XaikitError(f"{root} is not a checkout of {clone} (it has no {package}/ folder); pass source=DIR")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def config_file(path: str, root: Path, segmenter: str) -> Path:
    """``path``, or ``root / path`` for a path relative to the checkout; it must exist.

    Raises:
        XaikitError: the file exists in neither place.
    """
    for candidate in (Path(path).expanduser(), root / path):
        if candidate.is_file():
            return candidate.resolve()
    raise XaikitError(f"segmenter '{segmenter}' cannot find its config {path} (absolute, or relative to {root})")


def checkpoint(path: str | None, segmenter: str, download: str) -> Path:
    """The checkpoint file at ``path``.

    Raises:
        WeightsUnavailableError: no path or no such file; ``download`` says where to get one.
    """
    if path and Path(path).expanduser().is_file():
        return Path(path).expanduser().resolve()
    found = f"checkpoint {path} does not exist" if path else "needs weights=FILE, its checkpoint"
    raise WeightsUnavailableError(f"segmenter '{segmenter}' {found}; download {download} and pass weights=FILE")


def import_module(name: str, segmenter: str, install: str) -> ModuleType:
    """Import ``name``; a module missing on the way is reported with ``install``.

    Raises:
        MissingDependencyError: naming the missing module and how to install it.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise MissingDependencyError(
            f"segmenter '{segmenter}' needs the Python module '{error.name}', which is not installed; {install}"
        ) from None


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in ``chunk``-sized pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def spec_digest(spec: dict[str, Any]) -> str:
    """A 32-hex-digit key for a JSON-serialisable description (keys sorted)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _unsafe(path: Path, segmenter: str, why: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"segmenter '{segmenter}' refuses {path}: it {why}, and unpickling it could run code; pass "
        "trust_pickle=true (--option segmenter.trust_pickle=true) only if you trust where the file came from"
    )


def read_weights(path: Path, segmenter: str) -> dict[str, torch.Tensor]:
    """The model tensors of a detectron2-style checkpoint, read without unpickling.

    Accepts what ``torch.load(weights_only=True)`` reads: ``{"model": state_dict, ...}`` (the
    released ``.pth`` files of VLPart and SAN, and what detectron2's checkpointer saves) or a bare
    state dict. Entries other than ``"model"`` (optimizer, iteration) are ignored.

    Raises:
        UnsafeCheckpointError: a ``.pkl`` file, or one ``weights_only`` refuses; the message names
            the file and the ``trust_pickle`` option.
        XaikitError: a file that is not a checkpoint or holds no tensors.
    """
    if path.suffix == ".pkl":
        raise _unsafe(path, segmenter, "is a pickle file (.pkl)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as error:
        reason = " ".join(str(error).split("WeightsUnpickler error:")[-1].split())
        if isinstance(error, pickle.UnpicklingError) and "unsupported global" in reason.lower():  # a class it refuses to import
            raise _unsafe(path, segmenter, "holds Python objects that torch.load(weights_only=True) refuses") from None
        raise XaikitError(f"cannot read {path} as a PyTorch checkpoint ({reason[:200]})") from None
    state = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not any(isinstance(value, torch.Tensor) for value in state.values()):
        raise XaikitError(f"{path} holds no model tensors (expected a state dict, or one under the key 'model')")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def weights_loader(path: Path, segmenter: str, trust_pickle: bool) -> Callable[[torch.nn.Module], None]:
    """Read the checkpoint at ``path`` now; return the function that loads it into a detectron2 model.

    Reading first refuses an unsafe file before any model is built. Without ``trust_pickle`` the
    tensors come from :func:`read_weights` and go to ``model.load_state_dict(strict=False)``; keys
    the model or the checkpoint lacks are logged (detectron2's checkpointer does the same). With
    ``trust_pickle`` the file goes to detectron2's ``DetectionCheckpointer``, which also reads
    Detectron/Caffe2 ``.pkl`` files.

    Raises:
        UnsafeCheckpointError: see :func:`read_weights` (at once).
        XaikitError: when loading, the checkpoint shares no tensor with the model, or a tensor's
            shape differs (a checkpoint for another config).
    """
    if trust_pickle:
        checkpointer = import_module("detectron2.checkpoint", segmenter, "build detectron2 as docs/segmenters.md describes")
        return lambda model: checkpointer.DetectionCheckpointer(model).load(str(path))
    state = read_weights(path, segmenter)

    def load(model: torch.nn.Module) -> None:
        own = model.state_dict()
        shared = own.keys() & state.keys()
        if not shared:
            raise XaikitError(f"{path} shares no weight with segmenter '{segmenter}''s model; is it the checkpoint for its config?")
        wrong = sorted(key for key in shared if own[key].shape != state[key].shape)
        if wrong:
            raise XaikitError(
                f"{path} does not fit segmenter '{segmenter}''s config: {wrong[0]} is {tuple(state[wrong[0]].shape)} "
                f"in the checkpoint and {tuple(own[wrong[0]].shape)} in the model ({len(wrong)} such tensors)"
            )
        incompatible = model.load_state_dict(state, strict=False)
        if incompatible.missing_keys or incompatible.unexpected_keys:
            _log.warning(
                "%s: %d model tensors not in the checkpoint (%s), %d checkpoint tensors not used (%s)", path,
                len(incompatible.missing_keys), ", ".join(incompatible.missing_keys[:5]),
                len(incompatible.unexpected_keys), ", ".join(incompatible.unexpected_keys[:5]),
            )

    return load
