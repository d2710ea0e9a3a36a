"""Image preprocessing for vision transformers: resize, crop and normalise, batched in torch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.errors import XaikitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("squash", "center-crop")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "pil-bilinear")
"""``pil-bilinear`` resizes ``uint8`` images with PIL's bilinear filter, as torchvision's
``Resize`` does on PIL images (KLC's reference notebook), rounding to ``uint8`` before scaling to
``[0, 1]``; float tensors have no PIL image and get torch's antialiased bilinear."""


@dataclass(frozen=True)
class Preprocess:
    """How a backbone turns RGB images into its input tensor.

    Attributes:
        size: ``(H, W)`` of the model input.
        mode: ``"center-crop"`` resizes the shorter side to ``floor(min(size) / crop_pct)`` keeping
            the aspect ratio, then crops the centre (timm's and DINOv2's evaluation transform);
            ``"squash"`` resizes straight to ``size`` without keeping the aspect ratio (KLC's
            reference code: ``Resize((224, 224))``).
        crop_pct: fraction of the resized shorter side kept by ``"center-crop"``.
        interpolation: ``"bilinear"``, ``"bicubic"`` (antialiased when shrinking), ``"nearest"`` or
            ``"pil-bilinear"`` (see :data:`INTERPOLATIONS`).
        mean: per-channel mean subtracted after scaling to ``[0, 1]``.
        std: per-channel standard deviation divided by.
    """

    size: tuple[int, int] = (224, 224)
    mode: str = "center-crop"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise XaikitError(f"unknown resize mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise XaikitError(f"unknown interpolation '{self.interpolation}'; use one of {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_pct <= 1:
            raise XaikitError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def replace(self, **changes: Any) -> Preprocess:
        """A copy with some fields changed, e.g. ``replace(mode="squash")``."""
        return dataclasses.replace(self, **changes)

    def override(self, *, image_size: int | None = None, resize: str | None = None, crop_pct: float | None = None) -> Preprocess:
        """Apply a backbone's user options on top of the model's own preprocessing.

        Args:
            image_size: square input side, e.g. 518 for IVPT's DINOv2 or 224 for KLC.
            resize: ``"squash"`` or ``"center-crop"``.
            crop_pct: fraction of the resized shorter side kept by ``"center-crop"``.
        """
        changes: dict[str, Any] = {}
        if image_size is not None:
            changes["size"] = (image_size, image_size)
        if resize is not None:
            changes["mode"] = resize
        if crop_pct is not None:
            changes["crop_pct"] = crop_pct
        return self.replace(**changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-serialisable values (part of the feature-cache key)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}

    def __call__(self, images: Sequence[np.ndarray] | torch.Tensor) -> torch.Tensor:
        """Preprocess a batch.

        Args:
            images: RGB ``(H, W, 3)`` ``uint8`` arrays (sizes may differ), or a float tensor
                ``(B, 3, H, W)`` with values in ``[0, 1]``.

        Returns:
            ``(B, 3, size[0], size[1])`` ``float32``, normalised.
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise XaikitError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
            return self._normalise(self._resize(images.float()))
        return torch.cat([self.one(image)[None] for image in images]) if len(images) else torch.zeros(0, 3, *self.size)

    def one(self, image: np.ndarray) -> torch.Tensor:
        """Preprocess one RGB ``(H, W, 3)`` ``uint8`` image to ``(3, size[0], size[1])``."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise XaikitError(f"expected an RGB image (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self.interpolation == "pil-bilinear":
            pixels = torch.from_numpy(np.array(self._pil_resize(image))).permute(2, 0, 1)[None].float() / 255
            return self._normalise(pixels)[0]
        writable = image if image.flags.writeable and image.flags.c_contiguous else np.array(image)
        pixels = torch.from_numpy(writable).permute(2, 0, 1)[None].float() / 255
        return self._normalise(self._resize(pixels))[0]

    def _pil_resize(self, image: np.ndarray) -> np.ndarray:
        """Resize (and centre-crop) a ``uint8`` ``(H, W, 3)`` image with PIL's bilinear filter: ``(size[0], size[1], 3)`` ``uint8``."""
        from PIL import Image

        height, width = image.shape[:2]
        target = self.size if self.mode == "squash" else self._resized_size(height, width)
        resized = np.asarray(Image.fromarray(image).resize((target[1], target[0]), Image.BILINEAR))
        top, left = (target[0] - self.size[0]) // 2, (target[1] - self.size[1]) // 2
        return resized[top : top + self.size[0], left : left + self.size[1]]

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` of an image of ``height x width`` after the ``center-crop`` mode's resize, before its crop."""
        scale = int(min(self.size) / self.crop_pct) / min(height, width)
        return max(round(height * scale), self.size[0]), max(round(width * scale), self.size[1])

    def resize_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Bring per-pixel label maps into the model input frame, nearest-neighbour.

        Args:
            labels: ``(H, W)`` or ``(B, H, W)`` integer labels in image pixels.

        Returns:
            ``size``-shaped labels of the same dtype and leading shape, aligned with the pixels this
            preprocessing feeds the model (squashed, or resized and centre-cropped).
        """
        batched = labels if labels.ndim == 3 else labels[None]
        nearest = self.replace(interpolation="nearest")._resize(batched[:, None].float())[:, 0]
        out = nearest.round().to(labels.dtype)
        return out if labels.ndim == 3 else out[0]

    def labels_to_image(self, labels: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """The inverse of :meth:`resize_labels`: model-frame labels back onto an image, nearest-neighbour.

        Args:
            labels: ``(h, w)`` integer labels covering the model input (e.g. one per patch).
            image_size: ``(H, W)`` of the original image.

        Returns:
            ``(H, W)`` labels; with ``"center-crop"``, pixels outside the crop the model saw are 0.
        """
        height, width = image_size
        grid = labels[None, None].float()
        if self.mode == "squash":
            return F.interpolate(grid, size=(height, width), mode="nearest-exact")[0, 0].round().to(labels.dtype)
        shorter = int(min(self.size) / self.crop_pct)
        scale = shorter / min(height, width)
        resized = (max(round(height * scale), self.size[0]), max(round(width * scale), self.size[1]))
        top, left = (resized[0] - self.size[0]) // 2, (resized[1] - self.size[1]) // 2
        canvas = torch.zeros(1, 1, *resized, dtype=torch.float32, device=labels.device)
        canvas[..., top : top + self.size[0], left : left + self.size[1]] = F.interpolate(grid, size=self.size, mode="nearest-exact")
        return F.interpolate(canvas, size=(height, width), mode="nearest-exact")[0, 0].round().to(labels.dtype)

    def points_to_image(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Map ``(x, y)`` positions in the model input frame back to the original image's pixels.

        Args:
            points: ``(..., 2)`` float coordinates in model-input pixels (continuous: ``0`` is the
                left edge, ``size[1]`` the right edge).
            image_size: ``(H, W)`` of the original image.

        Returns:
            ``(..., 2)`` coordinates in the image, undoing the squash or the resize and centre crop.
        """
        height, width = image_size
        if self.mode == "squash":
            scale = points.new_tensor([width / self.size[1], height / self.size[0]])
            return points * scale
        shorter = int(min(self.size) / self.crop_pct)
        factor = shorter / min(height, width)
        resized = (max(round(height * factor), self.size[0]), max(round(width * factor), self.size[1]))
        offset = points.new_tensor([(resized[1] - self.size[1]) // 2, (resized[0] - self.size[0]) // 2])
        scale = points.new_tensor([width / resized[1], height / resized[0]])
        return (points + offset) * scale

    def _resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, 3, size)`` by squashing or resize + centre crop."""
        height, width = pixels.shape[-2:]
        if self.mode == "squash":
            return self._interpolate(pixels, self.size)
        resized = self._interpolate(pixels, self._resized_size(height, width))
        top = (resized.shape[-2] - self.size[0]) // 2
        left = (resized.shape[-1] - self.size[1]) // 2
        return resized[..., top : top + self.size[0], left : left + self.size[1]]

    def _interpolate(self, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(pixels.shape[-2:]) == tuple(size):
            return pixels
        if self.interpolation == "nearest":
            return F.interpolate(pixels, size=size, mode="nearest-exact")
        mode = "bilinear" if self.interpolation == "pil-bilinear" else self.interpolation
        resized = F.interpolate(pixels, size=size, mode=mode, align_corners=False, antialias=True)
        return resized.clamp_(0, 1)  # bicubic overshoots

    def denormalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of model input ``(B, 3, H, W)``: RGB in ``[0, 1]`` (clamped), for drawing."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels * std + mean).clamp(0, 1)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std
