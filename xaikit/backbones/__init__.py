"""Shared machinery for backbone plugins: preprocessing, devices, the ViT backbone base class."""

from xaikit.backbones.base import ViTBackbone, Tokens
from xaikit.backbones.device import resolve_device
from xaikit.backbones.preprocess import Preprocess

__all__ = ["Preprocess", "Tokens", "ViTBackbone", "resolve_device"]
