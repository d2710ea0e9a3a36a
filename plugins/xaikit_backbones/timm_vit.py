"""The ``timm:<model>`` backbone: any timm vision transformer, loaded with ``timm.create_model``.

Prefix tokens (CLS and registers) are read from the model (``num_prefix_tokens``), never assumed;
the global vector is the model's own pre-logits pooling after the final norm, which for CLS-token
models such as DINOv2 (``vit_base_patch14_reg4_dinov2.lvd142m``) is the normed CLS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from xaikit.backbones import Preprocess, Tokens, ViTBackbone
from xaikit.errors import WeightsUnavailableError, XaikitError, suggest

_CROP_MODES = {"center": "center-crop", "squash": "squash"}


RANDOM_WEIGHTS_SEED = 0
"""Seed of the weights of a model built without pretrained weights (``pretrained=False``)."""


def create_timm_model(model: str, *, pretrained: bool, weights: str | None, model_args: dict[str, Any]) -> torch.nn.Module:
    """``timm.create_model`` without a classifier head, with one-sentence errors.

    Args:
        model: a timm model name (optionally ``name.tag``), ``local-dir:/path`` or ``hf-hub:id``.
        pretrained: load pretrained weights; without them (and without ``weights``) the random weights
            are drawn from seed :data:`RANDOM_WEIGHTS_SEED`, so that every process of a ``torchrun`` run,
            and every run, has the same model (and the same feature-cache namespace).
        weights: a local weights file (safetensors or a state dict) given to timm through
            ``pretrained_cfg_overlay=dict(file=...)``; implies ``pretrained``.
        model_args: extra keyword arguments for the architecture (``img_size``, ``embed_dim``, ...).
    """
    import timm

    if weights is not None and not Path(weights).expanduser().is_file():
        raise XaikitError(f"weights file {weights} does not exist")
    overlay = {"file": str(Path(weights).expanduser())} if weights is not None else None
    name = model.split(":", 1)[-1] if model.startswith(("local-dir:", "hf-hub:")) else model.split(".", 1)[0]
    if not model.startswith(("local-dir:", "hf-hub:")) and not timm.is_model(name):
        raise XaikitError(f"unknown timm model '{model}'{suggest(name, timm.list_models())}")
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return timm.create_model(
                model, pretrained=pretrained or weights is not None, pretrained_cfg_overlay=overlay, num_classes=0, **model_args
            )
    except Exception as error:  # noqa: BLE001 - timm, safetensors and torch raise many types here
        if model.startswith("local-dir:"):
            raise XaikitError(f"cannot load timm model from {model[len('local-dir:'):]}: {error}") from None
        if weights is not None:
            raise XaikitError(f"cannot load weights file {weights} into timm model '{model}': {error}") from None
        if not isinstance(error, OSError):
            raise XaikitError(f"cannot create timm model '{model}': {error}") from None
        raise WeightsUnavailableError(
            f"cannot load pretrained weights for timm model '{model}': they are not on this machine and the hub "
            "cannot be reached; pass weights=/path/to/model.safetensors, model='local-dir:/path/to/dir', "
            "or pretrained=False"
        ) from None


def timm_preprocessing(network: torch.nn.Module) -> Preprocess:
    """The model's evaluation transform from its pretrained config (``timm.data.resolve_data_config``)."""
    import timm.data

    config = timm.data.resolve_data_config(model=network)
    # The built model's own input size wins over its pretrained config (they differ when img_size is given).
    size = getattr(getattr(network, "patch_embed", None), "img_size", None) or config["input_size"][1:]
    return Preprocess(
        size=tuple(size),
        mode=_CROP_MODES.get(config.get("crop_mode", "center"), "center-crop"),
        crop_pct=float(config.get("crop_pct", 1.0)),
        interpolation=config.get("interpolation", "bicubic") if config.get("interpolation") in ("bilinear", "bicubic", "nearest") else "bicubic",
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )


class TimmBackbone(ViTBackbone):
    """A timm vision transformer (``VisionTransformer`` and relatives with ``forward_intermediates``).

    Args:
        model: timm model name, e.g. ``vit_base_patch14_reg4_dinov2.lvd142m``, or
            ``local-dir:/path`` (a folder with ``config.json`` and ``model.safetensors``).
        pretrained: load the model's pretrained weights (from the local hub cache when offline).
        weights: a local weights file, applied through timm's ``pretrained_cfg_overlay``.
        model_args: architecture keyword arguments passed to ``timm.create_model``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        layers: block indices whose raw output patch tokens (before the final norm) are also returned.
        resize: ``"squash"`` or ``"center-crop"``; default: the model's pretrained config.
        image_size: square input side; timm resamples the positional embeddings when loading.
        crop_pct: fraction of the resized shorter side kept by centre cropping.
        autocast: float16 autocast on CUDA.

    Attributes:
        options: the arguments besides ``device`` that rebuild this backbone with
            ``xaikit.create("backbone", backbone.name, **backbone.options)``; IVPT records them in
            its checkpoints, so that a checkpoint trained from Python loads by name.
    """

    def __init__(
        self,
        model: str,
        pretrained: bool = True,
        weights: str | None = None,
        model_args: dict[str, Any] | None = None,
        device: str = "auto",
        layers: Sequence[int] = (),
        resize: str | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        autocast: bool = True,
    ) -> None:
        args = dict(model_args or {})
        if image_size is not None:
            args["img_size"] = image_size
        network = create_timm_model(model, pretrained=pretrained, weights=weights, model_args=args)
        if not hasattr(network, "forward_intermediates") or not hasattr(network, "num_prefix_tokens"):
            raise XaikitError(f"timm model '{model}' is not a vision transformer with prefix tokens and forward_intermediates")
        super().__init__(
            network,
            timm_preprocessing(network).override(image_size=image_size, resize=resize, crop_pct=crop_pct),
            name=f"timm:{model}",
            patch_size=int(network.patch_embed.patch_size[0]),
            embed_dim=int(network.embed_dim),
            num_prefix_tokens=int(network.num_prefix_tokens),
            num_blocks=len(network.blocks),
            device=device,
            layers=layers,
            autocast=autocast,
        )
        self.options: dict[str, Any] = {
            "pretrained": pretrained, "weights": weights, "model_args": model_args, "layers": list(layers),
            "resize": resize, "image_size": image_size, "crop_pct": crop_pct, "autocast": autocast,
        }

    def tokens(self, pixels: torch.Tensor) -> Tokens:
        final, intermediates = self.model.forward_intermediates(
            pixels, indices=list(self.layers) or [self.num_blocks - 1], norm=False, output_fmt="NLC"
        )
        grid = self.grid(pixels)
        _, patches = self.split_tokens(final, grid)
        pooled = self.model.forward_head(final, pre_logits=True)
        # NLC intermediates hold the patch tokens only (prefix tokens removed): (B, h*w, D).
        layers = {index: tokens.reshape(tokens.shape[0], *grid, -1) for index, tokens in zip(self.layers, intermediates, strict=True)} if self.layers else {}
        return Tokens(cls=pooled, patches=patches, layers=layers)
