"""demo-vit: the small ViT trained by xaikit on synthetic-birds (see ``weights/README.md``).

The weights live in ``weights/`` as a timm ``local-dir`` checkpoint (``config.json`` and
``model.safetensors``) and load through the same :class:`TimmBackbone` path as any timm model;
``train.py`` reproduces them from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xaikit_backbones.timm_vit import TimmBackbone

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class DemoViT(TimmBackbone):
    """The small ViT that xaikit trains on synthetic-birds; the offline default backbone.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        layers: block indices whose raw output patch tokens are also returned.
        resize: ``"squash"`` or ``"center-crop"``; default: the checkpoint's config.
        image_size: square input side; positional embeddings are resampled.
        autocast: float16 autocast on CUDA.
    """

    def __init__(
        self,
        device: str = "auto",
        layers: Sequence[int] = (),
        resize: str | None = None,
        image_size: int | None = None,
        autocast: bool = True,
    ) -> None:
        super().__init__(
            f"local-dir:{WEIGHTS_DIR}",
            pretrained=True,
            device=device,
            layers=layers,
            resize=resize,
            image_size=image_size,
            autocast=autocast,
        )
        self.name = "demo-vit"
        self.options = {"layers": list(layers), "resize": resize, "image_size": image_size, "autocast": autocast}

