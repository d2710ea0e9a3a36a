"""The ``dinov2`` backbone: DINOv2 through transformers, with or without register tokens.

DINOv2: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024.
Registers: Darcet et al., "Vision Transformers Need Registers", ICLR 2024. KLC's reference code
uses ``Dinov2Model.from_pretrained("facebook/dinov2-base")``: CLS = ``pooler_output`` (the CLS token
after the final LayerNorm), patches = ``last_hidden_state[:, 1:]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from xaikit.backbones import Preprocess, Tokens, ViTBackbone
from xaikit.backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD
from xaikit.backbones.pretrained import missing_model, pretrained_source
from xaikit.errors import MissingDependencyError, XaikitError

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in processor configs
# The evaluation transform of facebook/dinov2-*: shorter side 256 (bicubic), centre crop 224.
DEFAULT_PREPROCESS = Preprocess(size=(224, 224), mode="center-crop", crop_pct=224 / 256, interpolation="bicubic")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("backbone 'dinov2' needs transformers: pip install 'xaikit[transformers]'") from None
    return transformers


def _load(transformers: Any, model: str) -> torch.nn.Module:
    """``AutoModel.from_pretrained`` with one-sentence errors for missing weights and wrong models."""
    local = Path(model).expanduser()
    source = pretrained_source(model)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        if config.model_type not in MODEL_TYPES:
            raise XaikitError(f"'{model}' is a {config.model_type} model, not DINOv2 ({', '.join(MODEL_TYPES)})")
        return transformers.AutoModel.from_pretrained(source)
    except (OSError, ValueError) as error:
        if local.exists():
            raise XaikitError(f"{local} is not a transformers DINOv2 directory: {error}") from None
        raise missing_model("DINOv2", model) from None


def _preprocessing(transformers: Any, model: str) -> Preprocess:
    """The model's own evaluation transform from its processor config, else DINOv2's default."""
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(pretrained_source(model))
    except (OSError, ValueError):
        return DEFAULT_PREPROCESS
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    shorter = size.get("shortest_edge")
    crop_size = (crop.get("height", 224), crop.get("width", 224))
    centre = bool(getattr(processor, "do_center_crop", True)) and shorter
    return Preprocess(
        size=crop_size if centre else (size.get("height", crop_size[0]), size.get("width", crop_size[1])),
        mode="center-crop" if centre else "squash",
        crop_pct=min(crop_size) / shorter if centre else 1.0,
        interpolation=_RESAMPLE.get(int(getattr(processor, "resample", 3)), "bicubic"),
        mean=tuple(getattr(processor, "image_mean", IMAGENET_MEAN)),
        std=tuple(getattr(processor, "image_std", IMAGENET_STD)),
    )


class DINOv2Backbone(ViTBackbone):
    """DINOv2 (optionally with registers) loaded with ``transformers.AutoModel.from_pretrained``.

    Args:
        model: a hub id (``facebook/dinov2-base``, ``facebook/dinov2-with-registers-base``, ...) or
            a local directory holding ``config.json`` and weights (safetensors preferred).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        layers: block indices whose raw output tokens (before the final LayerNorm) are also returned.
        resize: ``"squash"`` (KLC's reference: ``Resize((224, 224))``) or ``"center-crop"``; default:
            the model's processor config (shorter side 256, centre crop 224).
        image_size: square input side (positional embeddings are interpolated), e.g. 518.
        crop_pct: fraction of the resized shorter side kept by centre cropping.
        autocast: float16 autocast on CUDA.

    Features: ``cls`` is ``pooler_output`` (CLS after the final LayerNorm); ``patches`` are
    ``last_hidden_state`` without the CLS and register tokens, on the ``(H/14, W/14)`` grid.
    """

    def __init__(
        self,
        model: str = "facebook/dinov2-base",
        device: str = "auto",
        layers: Sequence[int] = (),
        resize: str | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        autocast: bool = True,
    ) -> None:
        transformers = _transformers()
        network = _load(transformers, model)
        config = network.config
        super().__init__(
            network,
            _preprocessing(transformers, model).override(image_size=image_size, resize=resize, crop_pct=crop_pct),
            name=f"dinov2:{model}",
            patch_size=int(config.patch_size),
            embed_dim=int(config.hidden_size),
            num_prefix_tokens=1 + int(getattr(config, "num_register_tokens", 0)),
            num_blocks=int(config.num_hidden_layers),
            device=device,
            layers=layers,
            autocast=autocast,
        )

    def tokens(self, pixels: torch.Tensor) -> Tokens:
        output = self.model(pixel_values=pixels, output_hidden_states=bool(self.layers))
        grid = self.grid(pixels)
        _, patches = self.split_tokens(output.last_hidden_state, grid)
        layers = {index: self.split_tokens(output.hidden_states[index + 1], grid)[1] for index in self.layers}
        return Tokens(cls=output.pooler_output, patches=patches, layers=layers)
