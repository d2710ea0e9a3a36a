"""Built-in plugin: part segmenters that need no downloaded weights (``annotations``, ``dino-parts``).

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``; factories are
given by path, so listing them imports nothing heavy.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_segmenters(register):
    register(
        "annotations",
        "xaikit_segmenters.annotations:AnnotationSegmenter",
        summary="Ground-truth parts: dataset part masks, else regions around the visible keypoints inside the box.",
    )
    register(
        "dino-parts",
        "xaikit_segmenters.dino_parts:DinoPartsSegmenter",
        summary="Training-free part co-segmentation of a set of images by clustering ViT patch features (Amir et al.).",
    )
