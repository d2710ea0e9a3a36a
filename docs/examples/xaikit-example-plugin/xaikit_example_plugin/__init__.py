"""An example xaikit plugin that registers one segmenter, ``grid``.

This module is what the entry point names, so it must import quickly: it registers the segmenter by
path and the segmenter's module is imported only when someone builds it.
"""

import xaikit


@xaikit.hookimpl
def register_segmenters(register):
    register(
        "grid",
        "xaikit_example_plugin.grid:GridSegmenter",
        summary="Splits each image into a rows x cols grid of parts (a plugin-authoring example).",
    )
