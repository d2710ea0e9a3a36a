"""xaikit: explain vision-transformer image classifiers through semantic parts.

The public API. Components are built by name from plugins (:func:`create`, :func:`list_components`);
value types and interfaces are importable from here. Names that need torch (the value types,
interfaces and datasets) are imported on first use, so that ``import xaikit`` and listing plugins stay
instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xaikit.errors import (
    CapabilityError,
    DatasetError,
    DeviceError,
    DuplicateComponentError,
    MissingDependencyError,
    OptionTypeError,
    PluginContractError,
    PluginError,
    PluginFailure,
    UnknownComponentError,
    UnknownKindError,
    UnknownOptionError,
    WeightsUnavailableError,
    XaikitError,
)
from xaikit.hookspecs import KINDS, hookimpl
from xaikit.registry import ComponentInfo, PluginInfo, Registry

if TYPE_CHECKING:
    from xaikit.backbones.base import ViTBackbone
    from xaikit.backbones.preprocess import Preprocess
    from xaikit.features.cache import FeatureCache
    from xaikit.features.extract import extract_features
    from xaikit.data.cub import CUBDataset
    from xaikit.data.parts import CUB_PART_NAMES
    from xaikit.data.synthetic import SynthConfig, write_synthetic_birds
    from xaikit.bench import BenchConfig, BenchResult, run_bench
    from xaikit.compare.frame import load_runs
    from xaikit.data.subset import Subset
    from xaikit.distributed import Distributed
    from xaikit.training import Trainable, TrainProgress
    from xaikit.interfaces import Backbone, Capability, Dataset, Explainer, Matcher, Metric, PredictionMetric, Segmenter
    from xaikit.types import Explanation, Features, Match, MetricResult, PartMap, Sample

__version__ = "0.1.0"

_LAZY = {
    "Sample": "xaikit.types",
    "Features": "xaikit.types",
    "PartMap": "xaikit.types",
    "Match": "xaikit.types",
    "Explanation": "xaikit.types",
    "MetricResult": "xaikit.types",
    "Backbone": "xaikit.interfaces",
    "Segmenter": "xaikit.interfaces",
    "Matcher": "xaikit.interfaces",
    "Explainer": "xaikit.interfaces",
    "Metric": "xaikit.interfaces",
    "PredictionMetric": "xaikit.interfaces",
    "Dataset": "xaikit.interfaces",
    "Capability": "xaikit.interfaces",
    "CUBDataset": "xaikit.data.cub",
    "CUB_PART_NAMES": "xaikit.data.parts",
    "SynthConfig": "xaikit.data.synthetic",
    "write_synthetic_birds": "xaikit.data.synthetic",
    "ViTBackbone": "xaikit.backbones.base",
    "Preprocess": "xaikit.backbones.preprocess",
    "FeatureCache": "xaikit.features.cache",
    "extract_features": "xaikit.features.extract",
    "Subset": "xaikit.data.subset",
    "BenchConfig": "xaikit.bench",
    "BenchResult": "xaikit.bench",
    "run_bench": "xaikit.bench",
    "load_runs": "xaikit.compare.frame",
    "Trainable": "xaikit.training",
    "TrainProgress": "xaikit.training",
    "Distributed": "xaikit.distributed",
}

_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide :class:`Registry`, loading entry-point plugins on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
        _registry.load_entry_points()
    return _registry


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Build a component by kind and name, as in ``create("segmenter", "clipseg", device="cpu")``.

    Args:
        kind: one of ``backbone``, ``segmenter``, ``matcher``, ``explainer``, ``metric``, ``dataset``
            (plural accepted).
        name: the registered name; families take a variant as ``name:variant``.
        **options: keyword arguments for the component's factory.

    Raises:
        UnknownComponentError: no such name (the message suggests close names).
        UnknownOptionError: an option the component does not take, or a required one missing.
        MissingDependencyError: an optional dependency of the component is not installed.
        DuplicateComponentError: two plugins register the name.
        PluginError: the plugin failed to build the component.
    """
    return get_registry().create(kind, name, **options)


def list_components(kind: str | None = None) -> list[ComponentInfo]:
    """Every registered component (of one kind, if given), without importing or building any."""
    return get_registry().components(kind)


def list_plugins() -> list[PluginInfo]:
    """Every plugin xaikit found, including those that failed (status ``"error"``)."""
    return get_registry().plugins()


def register_plugin(plugin: object, name: str | None = None) -> PluginInfo:
    """Register a plugin object (a module or any object with ``@hookimpl`` functions) at run time.

    For code that cannot ship an entry point, such as a notebook; returns the plugin's status.
    """
    return get_registry().register_plugin(plugin, name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered by :func:`register_plugin` (or found by entry point)."""
    get_registry().unregister_plugin(name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xaikit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "KINDS",
    "CUB_PART_NAMES",
    "Backbone",
    "BenchConfig",
    "BenchResult",
    "CUBDataset",
    "Capability",
    "CapabilityError",
    "ComponentInfo",
    "Dataset",
    "DatasetError",
    "DeviceError",
    "Distributed",
    "DuplicateComponentError",
    "Explainer",
    "Explanation",
    "FeatureCache",
    "Features",
    "Match",
    "Matcher",
    "Metric",
    "MetricResult",
    "MissingDependencyError",
    "PartMap",
    "PluginError",
    "PluginInfo",
    "PredictionMetric",
    "Preprocess",
    "Registry",
    "Sample",
    "Segmenter",
    "Subset",
    "SynthConfig",
    "TrainProgress",
    "Trainable",
    "UnknownComponentError",
    "UnknownKindError",
    "UnknownOptionError",
    "ViTBackbone",
    "WeightsUnavailableError",
    "OptionTypeError",
    "PluginContractError",
    "PluginFailure",
    "XaikitError",
    "__version__",
    "create",
    "extract_features",
    "get_registry",
    "hookimpl",
    "list_components",
    "list_plugins",
    "load_runs",
    "register_plugin",
    "run_bench",
    "unregister_plugin",
    "write_synthetic_birds",
]
