"""Where a ``from_pretrained`` model comes from: a local folder or a hub id, and one sentence when neither is there.

Shared by the transformers-based components (the ``dinov2`` backbone, the ``clipseg`` segmenter):
``model=`` is a folder written by ``save_pretrained`` (``~`` expanded) or a hub id such as
``facebook/dinov2-base``, read from the local cache since tests and offline machines cannot reach the hub.
"""

from __future__ import annotations

from pathlib import Path

from xaikit.errors import WeightsUnavailableError, XaikitError

__all__ = ["looks_like_a_path", "missing_model", "pretrained_source"]


def pretrained_source(model: str) -> str:
    """What ``from_pretrained`` is given: the local folder with ``~`` expanded when it exists, else the hub id."""
    local = Path(model).expanduser()
    return str(local) if local.exists() else model


def looks_like_a_path(model: str) -> bool:
    """Whether ``model`` names a folder rather than a hub id (``owner/name``): absolute, ``~``, ``.``, or deeper than two parts."""
    return model.startswith(("/", "~", ".")) or model.count("/") > 1 or "\\" in model


def missing_model(title: str, model: str) -> XaikitError:
    """The error for a ``model`` that is neither a local folder nor a cached hub id (``title``: e.g. ``DINOv2``).

    A path names the folder that does not exist; a hub id says how to download it where there is
    network, and that no folder of that name exists either (``models/dinov2-base`` may be either).
    """
    if looks_like_a_path(model):
        return XaikitError(
            f"the {title} model directory {Path(model).expanduser()} does not exist; pass model= a directory written by "
            "save_pretrained, or a hub id"
        )
    return WeightsUnavailableError(
        f"cannot load {title} '{model}': its weights are not on this machine and the model hub cannot be reached; "
        f"download it where there is network (huggingface-cli download {model} --local-dir DIR) and pass model=DIR "
        f"(as a folder, {model} does not exist here either)"
    )
