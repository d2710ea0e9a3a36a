"""Run SAN's code with the open_clip the rest of xaikit uses (>= 2.24), not the 2.16-2.20 it pins.

SAN (MendelXu/SAN) builds CLIP with ``open_clip.create_model_and_transforms`` and then reads the
vision tower's internals as open_clip 2.16-2.20 laid them out. Two things changed since:

* attributes were removed: ``input_patchnorm`` and ``patchnorm_pre_ln`` (always false for CLIP's
  ViTs) and ``global_average_pool`` (now ``pool_type == "avg"``); SAN fails while building
  (``'VisionTransformer' object has no attribute 'input_patchnorm'``);
* the transformers became batch-first: every ``nn.MultiheadAttention`` is built with
  ``batch_first=True`` and ``Transformer.forward`` no longer expects ``(L, N, D)``. SAN feeds its
  residual blocks (and the text transformer) sequence-first tensors, so without a fix it would run
  and silently attend across the batch instead of across tokens.

:func:`sequence_first` restores both on the model SAN builds, and :func:`patched_san` hands SAN a
proxy of the ``open_clip`` module that applies it, in SAN's module only; nothing else in the
process sees a changed open_clip. Loading SAN's released checkpoints with open_clip >= 2.24 was not
tried (no network here); tensors that do not match are logged by the adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch

__all__ = ["patched_san", "sequence_first"]


def sequence_first(model: torch.nn.Module) -> torch.nn.Module:
    """Give an open_clip ``CLIP`` model built by open_clip >= 2.24 the layout SAN expects, in place.

    Every attention layer reads ``(L, N, D)`` (``batch_first = False``); the text transformer's
    own transposition stays off, since SAN transposes before calling it; the vision tower gets
    the removed attributes back with the values they had for CLIP's ViTs.
    """
    visual = model.visual
    if not hasattr(visual, "input_patchnorm"):
        visual.input_patchnorm = False
        visual.patchnorm_pre_ln = False
    if not hasattr(visual, "global_average_pool"):
        visual.global_average_pool = getattr(visual, "pool_type", "tok") == "avg"
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.batch_first = False
    return model


class _OpenClipForSAN:
    """``open_clip`` as SAN's ``san.model.san`` module sees it: models come back :func:`sequence_first`."""

    def __init__(self, open_clip: ModuleType) -> None:
        self._open_clip = open_clip

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open_clip, name)

    def create_model_and_transforms(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        model, *transforms = self._open_clip.create_model_and_transforms(*args, **kwargs)
        return (sequence_first(model), *transforms)


@contextlib.contextmanager
def patched_san(san_model_module: ModuleType) -> Iterator[None]:
    """Within the block, SAN's model module (``san.model.san``) builds CLIP through the proxy.

    Does nothing with an open_clip that still has ``input_patchnorm`` (2.16-2.20, SAN's own pin).
    """
    import open_clip
    from open_clip.transformer import VisionTransformer

    legacy = "input_patchnorm" in VisionTransformer.__init__.__code__.co_varnames
    if legacy:
        yield
        return
    san_model_module.open_clip = _OpenClipForSAN(open_clip)
    try:
        yield
    finally:
        san_model_module.open_clip = open_clip
