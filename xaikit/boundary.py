"""The host-plugin boundary: check what components return, and blame the plugin when its code fails.

:meth:`xaikit.Registry.create` passes every component it builds through :func:`guard`, which gives it
checked interface methods through a subclass of its own class (``isinstance`` still holds):

- **Output checks.** What ``segment``, ``match``, ``explain``, ``concept_maps``, ``evaluate`` and
  ``score`` return is checked against the rules below (shapes, dtypes, ranges, finite values,
  JSON-serialisable details, unit values that average to the value). A violation raises
  :class:`~xaikit.errors.PluginContractError` naming the plugin, its version, the component and the
  rule broken (exit 2).
- **Blame.** An exception other than a deliberate :class:`~xaikit.errors.XaikitError` raised inside
  a third-party plugin's code (its factory or any of these methods, ``fit`` included) becomes a
  :class:`~xaikit.errors.PluginFailure` naming the plugin, its version, the component, the method
  and the original error (exit 3), chained to it so that ``--debug`` shows the traceback. In
  xaikit's own plugins such an exception is xaikit's bug and is left as it is (exit 1).

The rule functions (``part_map_problem`` ...) return ``""`` or the rule broken, in words; the
contract suites of :mod:`xaikit.testing` assert the same rules. They cost one pass over each output
(``benchmarks/boundary_overhead.py`` measures it).
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xaikit.errors import PluginContractError, PluginFailure, XaikitError
from xaikit.types import Explanation, Match, MetricResult, PartMap, Sample

__all__ = [
    "Origin",
    "concept_maps_problem",
    "explanation_problem",
    "guard",
    "match_problem",
    "metric_result_problem",
    "part_map_problem",
    "unit_values_problem",
]


@dataclass(frozen=True)
class Origin:
    """Who built a component: for messages and for deciding who is to blame.

    Attributes:
        plugin: the plugin's name (its entry point).
        version: the distribution's version, if known.
        kind, name: the component.
        builtin: whether the plugin ships with xaikit (its failures are xaikit's bugs).
    """

    plugin: str
    version: str | None
    kind: str
    name: str
    builtin: bool

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"plugin '{self.plugin}'{version}, {self.kind} '{self.name}'"


# ------------------------------------------------------------------------------------------- rules


def part_map_problem(part_map: Any, sample: Sample) -> str:
    """The rule a segmenter's ``PartMap`` for ``sample`` breaks, or ``""``.

    Rules: a :class:`~xaikit.PartMap` whose ``labels`` are ``int64`` of the image's ``(H, W)``, with
    every non-zero label named in ``names`` (by a non-empty string), and ``scores`` (if any) of the
    same size and finite.
    """
    if not isinstance(part_map, PartMap):
        return f"returned a {type(part_map).__name__} where a PartMap belongs"
    labels = part_map.labels
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        return f"returned part labels of dtype {getattr(labels, 'dtype', type(labels).__name__)}; they must be torch.int64"
    if tuple(labels.shape) != tuple(sample.size):
        return f"returned a part map of {tuple(labels.shape)} for an image of {tuple(sample.size)}; it must be the image's (H, W)"
    names = part_map.names
    if not all(isinstance(name, str) and name for name in names.values()):
        return "named a label with something other than a non-empty string"
    if labels.numel() and int(labels.min()) < 0:
        return f"used the negative label {int(labels.min())}; labels are 0 (background) or a part id"
    present = torch.bincount(labels.flatten()).nonzero().flatten().tolist() if labels.numel() else []  # one O(HW) pass
    unnamed = [label for label in present if label != 0 and label not in names]
    if unnamed:
        return f"used label {unnamed[0]} without naming it in PartMap.names"
    if part_map.scores is not None and (tuple(part_map.scores.shape) != tuple(sample.size) or not torch.isfinite(part_map.scores).all()):
        return "returned part scores that are not finite or not the image's (H, W)"
    return ""


def match_problem(match: Any, queries: int, candidates: int) -> str:
    """The rule a matcher's ``Match`` between ``queries`` and ``candidates`` descriptors breaks, or ``""``.

    Rules: a :class:`~xaikit.Match` of ``int64`` indices within ``[0, queries)`` and
    ``[0, candidates)``, and finite floating-point similarities.
    """
    if not isinstance(match, Match):
        return f"returned a {type(match).__name__} where a Match belongs"
    for side, count in (("query", queries), ("candidate", candidates)):
        index = getattr(match, side)
        if index.dtype != torch.int64:
            return f"returned {side} indices of dtype {index.dtype}; they must be torch.int64"
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= count):
            return f"returned {side} index {int(index.max()) if int(index.max()) >= count else int(index.min())} outside 0..{count - 1}"
    if not match.similarity.is_floating_point() or not torch.isfinite(match.similarity).all():
        return "returned similarities that are not finite floating-point numbers"
    return ""


def explanation_problem(explanation: Any, batch: int) -> str:
    """The rule an ``Explanation`` of ``batch`` images breaks, or ``""``.

    Rules: an :class:`~xaikit.Explanation` with ``int64`` predictions ``(B,)`` indexing the score
    columns, finite scores ``(B, C)``, one JSON-serialisable ``details`` dict per image, and finite
    concept maps ``(B, K, h, w)`` if any.
    """
    if not isinstance(explanation, Explanation):
        return f"returned a {type(explanation).__name__} where an Explanation belongs"
    predictions, scores = explanation.predictions, explanation.scores
    if predictions.shape[0] != batch:
        return f"explained {predictions.shape[0]} images when given {batch}"
    if predictions.dtype != torch.int64:
        return f"returned predictions of dtype {predictions.dtype}; they must be torch.int64"
    if batch and (int(predictions.min()) < 0 or int(predictions.max()) >= scores.shape[1]):
        return f"predicted a class outside the {scores.shape[1]} score columns"
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        return "returned class scores that are not finite floating-point numbers"
    if explanation.concept_maps is not None:
        problem = concept_maps_problem(explanation.concept_maps, batch)
        if problem:
            return problem
    details = explanation.details
    if len(details) != batch or not all(isinstance(detail, dict) for detail in details):
        return f"returned {len(details)} details for {batch} images; there must be one dict per image"
    return _json_problem(details, "details")


def concept_maps_problem(maps: Any, batch: int) -> str:
    """The rule concept maps for ``batch`` images break, or ``""``: a finite float tensor ``(B, K, h, w)``."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or maps.shape[0] != batch:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        return f"returned concept maps of shape {shape} for {batch} images; they must be (B, K, h, w)"
    if not maps.is_floating_point() or not torch.isfinite(maps).all():
        return "returned concept maps that are not finite floating-point numbers"
    return ""


def metric_result_problem(result: Any) -> str:
    """The rule a metric's result breaks, or ``""``: a :class:`~xaikit.MetricResult` with a finite
    value (or ``None`` with a ``details["reason"]``), JSON-serialisable details, and unit values (if
    any) as :func:`unit_values_problem` requires."""
    if not isinstance(result, MetricResult):
        return f"returned a {type(result).__name__} where a MetricResult belongs"
    value = result.value
    if value is None:
        if not isinstance(result.details.get("reason"), str):
            return "returned no value without saying why (details['reason'])"
    elif not _is_number(value) or not math.isfinite(float(value)):
        return f"returned the value {value!r}; it must be a finite number, or None with details['reason']"
    return unit_values_problem(result.unit_values, value) or _json_problem(result.details, "details")


def unit_values_problem(units: Any, value: Any) -> str:
    """The rule a result's ``unit_values`` break given its ``value``, or ``""``.

    Rules: ``None``, or (with a value) a non-empty tuple of finite numbers whose mean is ``value``
    (to ``1e-9`` relative, ``1e-9`` absolute).
    """
    if units is None:
        return ""
    if value is None:
        return "returned unit_values without a value; give None for both"
    if not isinstance(units, tuple) or not all(_is_number(unit) for unit in units):
        return f"returned unit_values of type {type(units).__name__}; they must be a tuple of numbers (e.g. tuple(values.tolist()))"
    if not units:
        return "returned an empty unit_values; give None when the value is no mean over units"
    array = np.asarray(units, dtype=np.float64)  # (U,)
    if not np.isfinite(array).all():
        return "returned unit_values that are not all finite"
    if not math.isclose(float(array.mean()), float(value), rel_tol=1e-9, abs_tol=1e-9):
        return f"returned {len(units)} unit_values whose mean {float(array.mean())!r} is not the value {float(value)!r}"
    return ""


def _is_number(value: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool | np.bool_)


def _json_problem(value: Any, what: str) -> str:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        return f"returned {what} that are not JSON-serialisable ({error})"
    return ""


# ------------------------------------------------------------------------------------------- guard

def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


_CHECKS: dict[str, dict[str, Callable[..., str]]] = {
    "segmenter": {"segment": lambda out, args, kwargs: _each_part_map(out, _argument(args, kwargs, 0, "samples"))},
    "matcher": {
        "match": lambda out, args, kwargs: match_problem(out, len(_argument(args, kwargs, 0, "query")), len(_argument(args, kwargs, 1, "candidates")))
    },
    "explainer": {
        "fit": lambda out, args, kwargs: "",
        "explain": lambda out, args, kwargs: explanation_problem(out, len(_argument(args, kwargs, 0, "samples"))),
        "concept_maps": lambda out, args, kwargs: concept_maps_problem(out, _argument(args, kwargs, 0, "images").shape[0]),
    },
    "metric": {"evaluate": lambda out, args, kwargs: metric_result_problem(out), "score": lambda out, args, kwargs: metric_result_problem(out)},
}
"""Per kind, the methods :func:`guard` wraps and the check of each one's output, given its arguments."""


def _each_part_map(maps: Any, samples: Sequence[Sample]) -> str:
    if not isinstance(maps, list) or len(maps) != len(samples):
        return f"returned {len(maps) if isinstance(maps, list) else type(maps).__name__} part maps for {len(samples)} images; it must be a list of one per image"
    for index, (part_map, sample) in enumerate(zip(maps, samples, strict=True)):
        problem = part_map_problem(part_map, sample)
        if problem:
            return f"{problem} (image {index} of the batch)"
    return ""


_ORIGIN = "_xaikit_origin"
_GUARDED: dict[type, type] = {}


def guard(component: Any, origin: Origin) -> Any:
    """Give ``component`` the checked, blamed interface methods of :data:`_CHECKS`; return it.

    The component's class becomes a subclass of its own (same name, module and docstring) whose
    methods call the original through ``super()`` and check what it returns, so ``isinstance`` still
    holds, copies stay guarded, and patches of the original class take effect. A component whose class
    cannot be changed (``__slots__``, a C type) is returned unguarded.
    """
    checks = _CHECKS.get(origin.kind)
    if not checks:
        return component
    cls = type(component)
    base = cls.__mro__[1] if getattr(cls, "__xaikit_guarded__", False) else cls
    try:
        object.__setattr__(component, _ORIGIN, origin)
        component.__class__ = _GUARDED.get(base) or _GUARDED.setdefault(base, _guarded_class(base, checks))
    except (TypeError, AttributeError):  # slots or a built-in type: leave it as it is
        return component
    return component


def _guarded_class(base: type, checks: dict[str, Callable[..., str]]) -> type:
    namespace: dict[str, Any] = {"__xaikit_guarded__": True, "__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__}
    guarded = types.new_class(base.__name__, (base,), {}, lambda body: body.update(namespace))
    for name, check in checks.items():
        if callable(getattr(base, name, None)):
            setattr(guarded, name, _guarded_method(guarded, name, check))
    return guarded


def _guarded_method(guarded: type, name: str, check: Callable[..., str]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        origin: Origin = getattr(self, _ORIGIN)
        with blame(origin, name):
            result = getattr(super(guarded, self), name)(*args, **kwargs)
        problem = check(result, args, kwargs)
        if problem:
            message = f"{origin} broke the {origin.kind} contract in {name}(): it {problem}"
            raise RuntimeError(message) if origin.builtin else PluginContractError(message)  # a built-in's is xaikit's bug
        return result

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(getattr(guarded.__mro__[1], name, None), "__doc__", None)
    return method


class blame:  # noqa: N801 - used as a context manager, like contextlib's
    """Turn an unexpected exception in a third-party plugin's code into a :class:`PluginFailure` naming it.

    Deliberate :class:`~xaikit.errors.XaikitError` refusals, ``KeyboardInterrupt`` and exceptions in
    xaikit's own plugins pass through unchanged.
    """

    def __init__(self, origin: Origin, step: str) -> None:
        self.origin, self.step = origin, step

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if error is None or self.origin.builtin or isinstance(error, XaikitError) or not isinstance(error, Exception):
            return
        raise PluginFailure(f"{self.origin} failed in {self.step}(): {type(error).__name__}: {error}") from error
