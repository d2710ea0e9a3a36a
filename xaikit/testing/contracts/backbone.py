"""The contract every :class:`~xaikit.Backbone` meets."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from xaikit.interfaces import Backbone
from xaikit.testing.contracts._base import ComponentContract, default_samples
from xaikit.types import Features


class BackboneContract(ComponentContract):
    """Subclass as ``TestMyBackbone(BackboneContract)`` and implement :meth:`make_backbone`.

    Build a tiny model (random weights from a config are fine). The default images are three tiny
    RGB images of two sizes; override :meth:`make_images` to change them.

    Attributes:
        tolerance: absolute tolerance when comparing features of the same image computed twice
            or in different batches (loosen it for float16 models).
    """

    kind: ClassVar[str] = "backbone"
    tolerance: ClassVar[float] = 1e-4

    def make_backbone(self) -> Backbone:
        """Build the backbone under test."""
        raise NotImplementedError("implement make_backbone() in your BackboneContract subclass")

    def make_images(self) -> list[np.ndarray]:
        """RGB images ``(H, W, 3)`` ``uint8``."""
        return [sample.image for sample in default_samples()]

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls) -> Backbone:
        return cls().make_backbone()

    @pytest.fixture(scope="class")
    @classmethod
    def images(cls) -> list[np.ndarray]:
        return cls().make_images()

    @pytest.fixture(scope="class")
    @classmethod
    def pixels(cls, backbone: Backbone, images: list[np.ndarray]) -> torch.Tensor:
        return backbone.preprocess(images)

    @pytest.fixture(scope="class")
    @classmethod
    def features(cls, backbone: Backbone, pixels: torch.Tensor) -> Features:
        return backbone.features(pixels)

    def test_is_a_backbone_with_positive_sizes(self, backbone: Backbone) -> None:
        assert isinstance(backbone, Backbone)
        for name in ("embed_dim", "patch_size"):
            value = getattr(backbone, name)
            assert isinstance(value, int) and not isinstance(value, bool) and value > 0, f"{name} = {value!r}"

    def test_preprocess_gives_a_square_float_batch(self, pixels: torch.Tensor, images: list[np.ndarray]) -> None:
        assert isinstance(pixels, torch.Tensor) and pixels.is_floating_point()
        assert pixels.ndim == 4 and pixels.shape[:2] == (len(images), 3) and pixels.shape[2] == pixels.shape[3], tuple(pixels.shape)
        assert bool(torch.isfinite(pixels).all())

    def test_features_have_the_declared_shapes(self, backbone: Backbone, features: Features, pixels: torch.Tensor) -> None:
        assert isinstance(features, Features)
        batch, side = pixels.shape[0], pixels.shape[-1] // backbone.patch_size
        assert tuple(features.cls.shape) == (batch, backbone.embed_dim)
        assert tuple(features.patches.shape) == (batch, side, side, backbone.embed_dim)
        for layer, tokens in features.layers.items():
            assert isinstance(layer, int) and tokens.shape[:3] == features.patches.shape[:3], f"layer {layer}: {tuple(tokens.shape)}"

    def test_features_are_finite_floats_without_gradients(self, features: Features) -> None:
        for tensor in (features.cls, features.patches, *features.layers.values()):
            assert tensor.is_floating_point() and bool(torch.isfinite(tensor).all())
            assert not tensor.requires_grad, "features must not carry gradients unless the caller asks"

    def test_call_is_preprocess_then_features(self, backbone: Backbone, images: list[np.ndarray], features: Features) -> None:
        again = backbone(images)
        torch.testing.assert_close(again.cls, features.cls, atol=self.tolerance, rtol=0)
        torch.testing.assert_close(again.patches, features.patches, atol=self.tolerance, rtol=0)

    def test_an_image_gets_the_same_features_alone_or_in_a_batch(self, backbone: Backbone, images: list[np.ndarray], features: Features) -> None:
        alone = backbone(images[-1:])
        torch.testing.assert_close(alone.cls[0], features.cls[-1], atol=self.tolerance, rtol=1e-3)
        torch.testing.assert_close(alone.patches[0], features.patches[-1], atol=self.tolerance, rtol=1e-3)

    def test_leaves_the_images_unchanged(self, backbone: Backbone, images: list[np.ndarray]) -> None:
        copies = [image.copy() for image in images]
        backbone(images)
        assert all((image == copy).all() for image, copy in zip(images, copies))
