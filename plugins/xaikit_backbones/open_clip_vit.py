"""The ``open_clip:<arch>`` backbone: CLS and patch tokens of an open_clip model's visual tower.

Only plain ViT towers (``open_clip.transformer.VisionTransformer`` pooling the CLS token) are
supported; ResNet, timm and attention-pooled (CoCa) towers are refused.

Weights are never unpickled unsafely. open_clip 3.3's own loader (``factory.load_state_dict``) reads
``.safetensors`` with safetensors and calls ``torch.load(weights_only=True)`` for anything else, but
when that raises ``TypeError`` it retries ``torch.load`` *without* ``weights_only`` (a full unpickle
before torch 2.6), and older open_clip 2.x releases, which xaikit also accepts, omit ``weights_only``. So the
model is built with random weights and xaikit reads every checkpoint itself, local file or
downloaded tag alike: ``.safetensors`` with safetensors, anything else with
``torch.load(weights_only=True)`` and no fallback. Only the visual tower's tensors are loaded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from xaikit.backbones.base import Tokens, ViTBackbone
from xaikit.backbones.preprocess import Preprocess
from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError, suggest

#: open_clip ``resize_mode`` -> xaikit :class:`Preprocess` mode (``"longest"`` pads; no equivalent).
RESIZE_MODES = {"shortest": "center-crop", "squash": "squash"}


class OpenCLIPBackbone(ViTBackbone):
    """The visual tower of an open_clip model, e.g. ``open_clip:ViT-B-16`` with ``pretrained="openai"``.

    ``cls`` is ``ln_post`` of the CLS token, ``(B, D)`` with ``D`` the transformer width: the tower's
    pooled output *before* its ``proj`` into the joint image-text space (``cls @ model.proj`` is what
    ``model.visual(x)`` returns). ``patches`` is ``ln_post`` of the patch tokens ``(B, h, w, D)``;
    ``layers`` holds raw block outputs ``(B, h, w, D)``. Inputs whose patch grid differs from the
    trained one get bicubically interpolated positional embeddings; patch dropout is never applied.

    Args:
        arch: an open_clip architecture name (``open_clip.list_models()``), e.g. ``"ViT-B-16"``.
        pretrained: a pretrained tag of ``arch`` (e.g. ``"openai"``, ``"laion2b_s34b_b88k"``), a
            local checkpoint (``.safetensors``, or ``.pt``/``.pth``/``.bin`` readable with
            ``weights_only=True``), or ``None`` for random weights. A tag that needs QuickGELU
            switches it on, so that the tower computes what it was trained to compute.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        layers: blocks whose output tokens are returned in ``Features.layers`` (negative from the end).
        resize: ``"center-crop"`` or ``"squash"``; ``None`` follows the model's ``resize_mode``.
        image_size: square input side in pixels instead of the model's own.
        autocast: run in float16 autocast on CUDA.

    Raises:
        MissingDependencyError: open_clip is not installed.
        XaikitError: unknown arch or tag, an unsupported tower, or a checkpoint that does not fit.
        WeightsUnavailableError: a tag's weights are not on disk and cannot be downloaded.
    """

    def __init__(
        self,
        arch: str,
        pretrained: str | None = None,
        device: str = "auto",
        layers: Sequence[int] = (),
        resize: str | None = None,
        image_size: int | None = None,
        autocast: bool = True,
    ) -> None:
        open_clip = _import_open_clip()
        vision = _vision_config(open_clip, arch)
        weights, tag = _resolve_weights(open_clip, arch, pretrained) if pretrained else (None, {})
        with _quiet_random_init():
            model = open_clip.create_model(
                arch,
                pretrained=None,
                pretrained_hf=False,
                force_quick_gelu=bool(tag.get("quick_gelu")),
                force_preprocess_cfg=tag,
            )
        visual = model.visual
        if weights is not None:
            _load_visual_weights(visual, weights, arch)
        super().__init__(
            visual,
            _preprocessing(open_clip.get_model_preprocess_cfg(model), resize, image_size),
            name=_name(arch, pretrained, weights, tag),
            patch_size=vision.patch_size,
            embed_dim=vision.width,
            num_prefix_tokens=1,
            num_blocks=len(visual.transformer.resblocks),
            device=device,
            layers=layers,
            autocast=autocast,
        )

    def tokens(self, pixels: torch.Tensor) -> Tokens:
        """Run the tower's own modules on ``(B, 3, H, W)``: CLS ``(B, D)``, patches ``(B, h, w, D)``."""
        visual = self.model
        grid = self.grid(pixels)
        x = visual.conv1(pixels).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + self.positions(grid).to(x.dtype))
        layers = {}
        for index, block in enumerate(visual.transformer.resblocks):
            x = self._block(block, x)
            if index in self.layers:
                layers[index] = self.split_tokens(x, grid)[1]
        cls, patches = self.split_tokens(visual.ln_post(x), grid)
        return Tokens(cls=cls, patches=patches, layers=layers)

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional embeddings ``(1, 1 + h*w, D)`` for a ``grid = (h, w)``, resampled if not the trained grid."""
        table = self.model.positional_embedding
        trained = tuple(self.model.grid_size)
        if tuple(grid) == trained:
            return table[None]
        patches = table[1:].reshape(1, *trained, -1).permute(0, 3, 1, 2).float()
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False, antialias=True)
        return torch.cat([table[None, :1], patches.flatten(2).transpose(1, 2).to(table.dtype)], dim=1)

    def _block(self, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One residual block on ``(B, N, D)``; towers built sequence-first get ``(N, B, D)``."""
        if getattr(self.model.transformer, "batch_first", False):
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)


def _import_open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as error:
        raise MissingDependencyError(
            "The open_clip backbone needs the open_clip_torch package: pip install 'xaikit[open-clip]'."
        ) from error
    return open_clip


def _vision_config(open_clip: ModuleType, arch: str) -> Any:
    """``arch``'s ``CLIPVisionCfg``, refusing unknown archs and towers other than a CLS-pooled ViT."""
    if arch not in open_clip.list_models():
        hint = suggest(arch, open_clip.list_models()) or "; open_clip.list_models() lists the known ones"
        raise XaikitError(f"unknown open_clip architecture '{arch}'{hint}")
    vision = open_clip.CLIPVisionCfg(**open_clip.get_model_config(arch)["vision_cfg"])
    if vision.timm_model_name or isinstance(vision.layers, (list, tuple)):
        tower = f"timm '{vision.timm_model_name}'" if vision.timm_model_name else "ResNet"
        raise XaikitError(f"open_clip '{arch}' has a {tower} visual tower; the open_clip backbone supports ViT towers only")
    if vision.attentional_pool or vision.pool_type != "tok":
        raise XaikitError(
            f"open_clip '{arch}' pools its visual tower with "
            f"{'attention' if vision.attentional_pool else repr(vision.pool_type)}, not the CLS token; "
            "the open_clip backbone supports CLS-pooled ViT towers only"
        )
    return vision


def _resolve_weights(open_clip: ModuleType, arch: str, pretrained: str) -> tuple[Path, dict[str, Any]]:
    """``pretrained`` -> the local weights file and the tag's config (``{}`` for a file).

    A tag's weights come from open_clip's download cache; they are fetched only when missing and the
    hub is reachable.
    """
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path, {}
    tag = open_clip.get_pretrained_cfg(arch, pretrained)
    if not tag:
        if path.suffix or len(path.parts) > 1:
            raise XaikitError(f"the checkpoint file {path} does not exist")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        hint = suggest(pretrained, tags) or f"; open_clip.list_pretrained_tags_by_model('{arch}') lists its tags"
        raise XaikitError(f"'{pretrained}' is neither a checkpoint file nor a pretrained tag of open_clip '{arch}'{hint}")
    try:
        return Path(open_clip.download_pretrained(tag)), tag
    except OSError as error:
        raise WeightsUnavailableError(
            f"The weights of open_clip '{arch}' tag '{pretrained}' are not on this machine and cannot be "
            "downloaded (offline); pass a local copy instead, e.g. pretrained=/path/to/file.safetensors."
        ) from error


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Drop open_clip's "Model initialized randomly" warning: xaikit loads the weights afterwards."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, read without unsafe unpickling.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``. A
    ``{"state_dict": ...}`` wrapper and a DataParallel ``module.`` prefix are removed.

    Raises:
        XaikitError: the file cannot be read as plain tensors (e.g. a TorchScript archive).
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the failure, the file is not plain tensors
        raise XaikitError(
            f"{path.name} cannot be read safely as tensors (torch.load with weights_only=True failed); "
            "convert it to .safetensors"
        ) from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise XaikitError(f"{path.name} holds a {type(checkpoint).__name__}, not a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_visual_weights(visual: torch.nn.Module, path: Path, arch: str) -> None:
    """Load the ``visual.*`` tensors of a full CLIP checkpoint (or a tower-only one) into ``visual``."""
    state = _read_state_dict(path)
    if any(key.startswith("visual.") for key in state):
        state = {key[len("visual.") :]: value for key, value in state.items() if key.startswith("visual.")}
    expected = visual.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(key for key in expected.keys() & state.keys() if expected[key].shape != state[key].shape)
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise XaikitError(
            f"{path.name} does not hold the visual tower of open_clip '{arch}': {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(mismatched)} differently shaped tensors (e.g. '{example}')"
        )
    visual.load_state_dict(state)


def _preprocessing(config: Mapping[str, Any], resize: str | None, image_size: int | None) -> Preprocess:
    """open_clip's preprocess config (size, mean, std, interpolation, resize_mode) -> :class:`Preprocess`."""
    mode = resize or RESIZE_MODES.get(config.get("resize_mode", "shortest"))
    if mode is None:
        raise XaikitError(
            f"open_clip resize_mode '{config['resize_mode']}' has no xaikit equivalent; pass resize='center-crop' or 'squash'"
        )
    size = image_size or config["size"]
    return Preprocess(
        size=(size, size) if isinstance(size, int) else tuple(size),
        mode=mode,
        crop_pct=1.0,
        interpolation=config.get("interpolation", "bicubic"),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )


def _name(arch: str, pretrained: str | None, weights: Path | None, tag: Mapping[str, Any]) -> str:
    """``open_clip:ARCH``, ``open_clip:ARCH@TAG`` or ``open_clip:ARCH@FILE_NAME``."""
    if weights is None:
        return f"open_clip:{arch}"
    return f"open_clip:{arch}@{pretrained if tag else weights.name}"
