"""Test kit for plugin authors: contract suites for every kind, tiny data, toy components.

Subclass the suite of your component's kind in a test module and build your component; pytest then
runs every check of the contract on it::

    from xaikit.testing import SegmenterContract

    class TestGrid(SegmenterContract):
        registered_name = "grid"  # also check that the installed plugin registers it

        def make_segmenter(self):
            return xaikit.create("segmenter", "grid", rows=3)

Suites: :class:`DatasetContract`, :class:`BackboneContract`, :class:`SegmenterContract`,
:class:`MatcherContract`, :class:`ExplainerContract`, :class:`MetricContract`. Helpers:
:func:`tiny_samples`, :class:`TinyDataset`, :func:`image_batch`, :func:`demo_backbone`, and the toy
components :class:`ToySegmenter` and :class:`ToyExplainer`.

This package imports pytest; ``import xaikit`` never imports it.
"""

import pytest

# Plain asserts in the suites report their operands, as in a test module, when pytest rewrites them.
pytest.register_assert_rewrite("xaikit.testing.contracts")

from xaikit.testing.contracts import (  # noqa: E402 - after the rewrite hook
    BackboneContract,
    ComponentContract,
    DatasetContract,
    ExplainerContract,
    MatcherContract,
    MetricContract,
    SegmenterContract,
)
from xaikit.testing.fixtures import TINY_PARTS, TinyDataset, demo_backbone, image_batch, tiny_sample, tiny_samples  # noqa: E402
from xaikit.testing.toys import ToyExplainer, ToySegmenter  # noqa: E402

__all__ = [
    "TINY_PARTS",
    "BackboneContract",
    "ComponentContract",
    "DatasetContract",
    "ExplainerContract",
    "MatcherContract",
    "MetricContract",
    "SegmenterContract",
    "TinyDataset",
    "ToyExplainer",
    "ToySegmenter",
    "demo_backbone",
    "image_batch",
    "tiny_sample",
    "tiny_samples",
]
