"""Built-in plugin: descriptor matchers under cosine similarity (``mnn``, ``cosine``).

Registered through the ``xaikit`` entry-point group in xaikit's own ``pyproject.toml``.
"""

from __future__ import annotations

from xaikit import hookimpl


@hookimpl
def register_matchers(register):
    register(
        "mnn",
        "xaikit_matchers.cosine:MutualNearestNeighbours",
        summary="Mutual nearest neighbours ('best buddies') under cosine similarity, as KLC matches parts.",
    )
    register(
        "cosine",
        "xaikit_matchers.cosine:NearestNeighbour",
        summary="Each query descriptor to its most similar candidate above a threshold (not mutual).",
    )
