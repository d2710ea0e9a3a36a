"""Built-in plugin: ViT backbones (DINOv2 via transformers, any timm ViT, open_clip visual towers, demo-vit).

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``. Factories are
given by path, so listing imports neither torch nor the model libraries.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_backbones(register):
    register(
        "demo-vit",
        "xaikit_backbones.demo_vit:DemoViT",
        summary="A small ViT trained by xaikit on synthetic-birds; the offline default backbone.",
    )
    register(
        "dinov2",
        "xaikit_backbones.dinov2:DINOv2Backbone",
        summary="DINOv2, with or without registers, through transformers; any hub id or local directory.",
        requires=("transformers",),
        install="pip install 'xaikit[transformers]'",
    )
    register(
        "timm",
        "xaikit_backbones.timm_vit:TimmBackbone",
        summary="Any timm ViT by name, e.g. timm:vit_base_patch14_reg4_dinov2.lvd142m; local weights via weights=FILE.",
        variant_arg="model",
    )
    register(
        "open_clip",
        "xaikit_backbones.open_clip_vit:OpenCLIPBackbone",
        summary="The visual tower of an open_clip model, e.g. open_clip:ViT-B-16 with pretrained=TAG or FILE.",
        requires=("open_clip",),
        install="pip install 'xaikit[open-clip]'",
        variant_arg="arch",
    )
