"""Contract test suites, one per kind: subclass one in your plugin's tests and build your component."""

from xaikit.testing.contracts._base import ComponentContract
from xaikit.testing.contracts.backbone import BackboneContract
from xaikit.testing.contracts.dataset import DatasetContract
from xaikit.testing.contracts.explainer import ExplainerContract
from xaikit.testing.contracts.matcher import MatcherContract
from xaikit.testing.contracts.metric import MetricContract
from xaikit.testing.contracts.segmenter import SegmenterContract

__all__ = [
    "BackboneContract",
    "ComponentContract",
    "DatasetContract",
    "ExplainerContract",
    "MatcherContract",
    "MetricContract",
    "SegmenterContract",
]
