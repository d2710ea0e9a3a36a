"""An xaikit plugin: registers the ``centre`` segmenter.

The entry point in ``pyproject.toml`` names this module. Keep it light: it registers the segmenter
by its ``"module:attribute"`` path, so listing plugins never imports the segmenter's module (or
whatever heavy library that module needs).
"""

import xaikit


@xaikit.hookimpl
def register_segmenters(register):
    register(
        "centre",
        "xaikit_my_plugin.segmenter:CentreSegmenter",
        summary="One part, 'centre': the central region of each image, a fraction of its height and width.",
    )
