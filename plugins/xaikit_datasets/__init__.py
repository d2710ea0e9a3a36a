"""Built-in plugin: the ``cub`` and ``synthetic-birds`` datasets.

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``, exactly as a
third-party plugin is. Factories are given by path, so listing imports nothing heavy.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_datasets(register):
    register(
        "cub",
        "xaikit.data.cub:CUBDataset",
        summary="CUB-200-2011 in its official layout: 15 part keypoints, boxes, train/test split.",
    )
    register(
        "synthetic-birds",
        "xaikit_datasets.synthetic:synthetic_birds",
        summary="Procedural birds with known parts and masks, generated into the cache on first use.",
    )
