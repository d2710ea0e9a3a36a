"""What a benchmark run is: components by name, their options, the image sample; and its resolved record."""

from __future__ import annotations

import inspect
import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from xaikit.bench.sampling import REFERENCE_SEED
from xaikit.errors import UnknownOptionError, XaikitError
from xaikit.validation import integer_option

__all__ = ["COMPONENT_KINDS", "RESULT_KEYS", "BenchConfig", "split_options"]

COMPONENT_KINDS = ("dataset", "backbone", "segmenter", "matcher", "explainer")
"""Kinds whose options ``--option KIND.KEY=VALUE`` addresses (``metric.NAME.KEY`` for metrics)."""

RESULT_KEYS = ("dataset", "data_root", "components", "metrics", "limit", "seed")
"""Keys of the resolved configuration that decide results: a run resumes only if they match."""


@dataclass
class BenchConfig:
    """One benchmark run, as ``xaikit bench`` takes it.

    Attributes:
        dataset: registered dataset name; the explainer is fitted on its train split and
            evaluated on its test split.
        data_root: the dataset's root directory (``root=`` of its factory), if it needs one.
        backbone, segmenter, matcher: registered names, or ``None`` for the explainer's own
            default; each is built by the runner and passed to the explainer.
        explainer: registered explainer name.
        metrics: registered metric names.
        k: prototypes per query (``k=`` of the explainer), or ``None`` for its default.
        limit: evaluate a random sample of this many test images (see
            :func:`~xaikit.bench.sampling.sample_indices`), or ``None`` for all of them.
        seed: the sample's seed (31, KLC's reference sample, by default).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, for every component that takes one.
        batch_size: images per explainer call.
        strict: stop at the first image that cannot be decoded instead of skipping it.
        bootstrap: resamples of the 95 % bootstrap interval of each prediction metric, over images,
            and of each metric with :attr:`~xaikit.MetricResult.unit_values`, over its units (seeded
            with ``seed``); 0 leaves intervals out.
        options: per-kind keyword options: ``{"backbone": {"image_size": 224}, "metric.consistency": {...}}``.
    """

    dataset: str = "synthetic-birds"
    data_root: str | None = None
    backbone: str | None = None
    segmenter: str | None = None
    matcher: str | None = None
    explainer: str = "klc"
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    k: int | None = None
    limit: int | None = None
    seed: int = REFERENCE_SEED
    device: str = "auto"
    batch_size: int = 32
    strict: bool = False
    bootstrap: int = 1000
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse field values no run can use, before anything is built or written.

        Raises:
            XaikitError: naming the field and the value (``limit`` and ``batch_size`` must be
                positive integers, ``k`` too when given, ``metrics`` a non-empty list of names).
        """
        for name, value in (("limit", self.limit), ("k", self.k)):
            if value is not None:
                integer_option(name, value, 1)
        integer_option("batch_size", self.batch_size, 1)
        integer_option("bootstrap", self.bootstrap, 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise XaikitError(f"seed must be an integer, got {self.seed!r}")
        if not self.metrics or not all(isinstance(name, str) and name for name in self.metrics):
            raise XaikitError(f"metrics must be a non-empty list of metric names, got {self.metrics!r}")
        if len(set(self.metrics)) != len(self.metrics):
            raise XaikitError(f"metrics name {', '.join(sorted({m for m in self.metrics if self.metrics.count(m) > 1}))} twice")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-serialisable."""
        return json.loads(json.dumps(asdict(self), default=str))


def split_options(pairs: dict[str, Any], metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Route ``KIND.KEY`` / ``metric.NAME.KEY`` options to their component; a bare ``KEY`` goes to the explainer.

    Raises:
        UnknownOptionError: a prefix names no component kind, or a metric that is not in the run.
    """
    routed: dict[str, dict[str, Any]] = {}
    for key, value in pairs.items():
        target, dot, rest = key.partition(".")
        if not dot:
            target, rest = "explainer", key
        elif target == "metric":
            name, dot, rest = rest.partition(".")
            if not dot or name not in metrics:
                raise UnknownOptionError(f"option '{key}' must read metric.NAME.KEY with NAME one of the run's metrics ({', '.join(metrics)})")
            target = f"metric.{name}"
        elif target not in COMPONENT_KINDS:
            raise UnknownOptionError(f"option '{key}' names no component; prefix it with one of {', '.join(COMPONENT_KINDS)} or metric.NAME")
        routed.setdefault(target, {})[rest] = value
    return routed


PRESENTATION_OPTIONS = ("progress",)
"""Options that change only what is shown, never a result: left out of ``config.json`` (and so of resume checks)."""


def resolved_options(factory: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` plus the factory's JSON-serialisable defaults: what the component was really built with.

    :data:`PRESENTATION_OPTIONS` are left out: showing a progress bar does not change what a run computes.
    """
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return dict(given)
    options: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.default is inspect.Parameter.empty or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if isinstance(parameter.default, (str, int, float, bool, type(None), list, tuple)):
            options[parameter.name] = parameter.default
    for key, value in given.items():
        options[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else type(value).__name__
    return json.loads(json.dumps({key: value for key, value in options.items() if key not in PRESENTATION_OPTIONS}))


def environment() -> dict[str, str]:
    """Versions of Python, xaikit and torch."""
    import torch

    from xaikit import __version__

    return {"python": platform.python_version(), "xaikit": __version__, "torch": torch.__version__, "platform": platform.platform()}
