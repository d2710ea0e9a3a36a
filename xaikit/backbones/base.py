"""The base class of every ViT backbone adapter (transformers, timm, open_clip, demo-vit)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from xaikit.backbones.device import resolve_device
from xaikit.backbones.preprocess import Preprocess
from xaikit.errors import XaikitError
from xaikit.interfaces import Backbone
from xaikit.types import Features


@dataclass
class Tokens:
    """What an adapter's forward pass returns, before xaikit wraps it as :class:`~xaikit.Features`.

    Attributes:
        cls: the CLS token after the final norm, ``(B, D)``.
        patches: patch tokens after the final norm, ``(B, h, w, D)``; prefix tokens (CLS,
            registers) removed.
        layers: block index -> that block's output patch tokens ``(B, h, w, D)``, before any
            final norm, for the blocks requested with ``layers``.
    """

    cls: torch.Tensor
    patches: torch.Tensor
    layers: dict[int, torch.Tensor] = field(default_factory=dict)


class ViTBackbone(Backbone):
    """A vision transformer wrapped for xaikit: preprocessing, device, no-grad, autocast on CUDA.

    Subclasses load their model and implement :meth:`tokens`. The model is put in eval mode on the
    resolved device with gradients off.

    Args:
        model: the loaded ``torch.nn.Module``.
        preprocessing: how images become the model input (from the model's own config).
        name: the registered name and model id, e.g. ``"dinov2:facebook/dinov2-base"``.
        patch_size: side of one patch in input pixels.
        embed_dim: ``D``.
        num_prefix_tokens: tokens before the patches (CLS plus registers).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        layers: indices of blocks whose output tokens are returned in ``Features.layers``
            (negative indices count from the last block).
        autocast: run in float16 autocast on CUDA (ignored on CPU).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocess,
        *,
        name: str,
        patch_size: int,
        embed_dim: int,
        num_prefix_tokens: int,
        num_blocks: int,
        device: str | torch.device = "auto",
        layers: Sequence[int] = (),
        autocast: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocessing = preprocessing
        self.name = name
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.num_blocks = num_blocks
        self.layers = tuple(sorted({self._block_index(index) for index in layers}))
        self.autocast = autocast
        self._fingerprint: str | None = None

    def _block_index(self, index: int) -> int:
        resolved = index + self.num_blocks if index < 0 else index
        if not 0 <= resolved < self.num_blocks:
            raise XaikitError(f"layer {index} does not exist: {self.name} has blocks 0..{self.num_blocks - 1}")
        return resolved

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={str(self.device)!r}, input={self.preprocessing.size})"

    # -------------------------------------------------------------------------------- interface
    def preprocess(self, images: Sequence[np.ndarray] | torch.Tensor) -> torch.Tensor:
        """RGB ``(H, W, 3)`` ``uint8`` images (or ``(B, 3, H, W)`` floats in ``[0, 1]``) -> model input."""
        return self.preprocessing(images)

    def features(self, pixels: torch.Tensor) -> Features:
        """Run the model on preprocessed ``(B, 3, H, W)`` input; returns float32 features on ``self.device``."""
        with torch.no_grad(), self._autocast():
            tokens = self.tokens(pixels.to(self.device, non_blocking=True))
        return Features(
            cls=tokens.cls.float(),
            patches=tokens.patches.float(),
            layers={index: value.float() for index, value in tokens.layers.items()},
        )

    @abstractmethod
    def tokens(self, pixels: torch.Tensor) -> Tokens:
        """The model's forward pass on ``(B, 3, H, W)`` input already on ``self.device``."""

    # ------------------------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> str:
        """SHA-256 of every parameter and buffer (name, dtype, shape, bytes): the weights' identity."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def cache_namespace(self) -> str:
        """Key of everything that determines the features of an image: weights, preprocessing, layers."""
        spec = {"format": 1, "name": self.name, "weights": self.fingerprint, "preprocess": self.preprocessing.to_dict(), "layers": list(self.layers)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]

    # -------------------------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.autocast and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield

    def grid(self, pixels: torch.Tensor) -> tuple[int, int]:
        """``(h, w)`` patch grid for an input batch ``(B, 3, H, W)``."""
        return pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size

    def split_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence ``(B, prefix + h*w, D)`` -> CLS ``(B, D)`` and patches ``(B, h, w, D)``."""
        batch, _, dim = tokens.shape
        return tokens[:, 0], tokens[:, self.num_prefix_tokens :].reshape(batch, grid[0], grid[1], dim)
