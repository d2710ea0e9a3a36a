"""Experiment grids: one ``xaikit bench`` run per combination of values, under one parent directory.

An axis names a :class:`~xaikit.bench.BenchConfig` field (``k``, ``segmenter``, ``explainer``,
``limit`` ...) or a component option as ``--option`` writes it (``dataset.crop_to_bbox``, a bare
``label_agreement`` for the explainer), with the values it takes::

    xaikit bench --grid k=1,3,5 --grid segmenter=annotations,dino-parts --out runs/klc-grid

or in a TOML experiment file (``--grid-file``)::

    [grid]
    k = [1, 3, 5]
    segmenter = ["annotations", "dino-parts"]

or lists runs one by one, for settings that do not form a product::

    [[run]]
    explainer = "nearest-prototype"

    [[run]]
    name = "klc-k5"
    k = 5

The product of the axes (then the listed runs) gives the runs, each a normal resumable run directory named
after its values (``k=3,segmenter=dino-parts``) under the parent, which also receives
``grid.json`` (the axes and run names) and, from ``xaikit bench --grid``, the runs' comparison in
``comparison/`` (``xaikit compare``'s report: paired tests, per-class accuracy, plots). Runs share features and prototype parts through the
caches, so a backbone computes each image once for the whole grid.

Every run's settings are checked (:func:`check_runs`) before ``grid.json`` is written; a resumed grid
keeps its finished runs untouched (:func:`finished_summary`); an overwriting grid first removes the
previous grid's runs it no longer has, and its report, deleting only files xaikit wrote (:func:`start_grid`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xaikit.bench.config import BenchConfig, split_options
from xaikit.bench.rundir import CONFIG, LOCK, SUMMARY, TEMPORARY, RunDirectory
from xaikit.bench.runner import default_component_name
from xaikit.compare.report import previous_files
from xaikit.compare.runs import MANIFEST
from xaikit.errors import UnknownOptionError, XaikitError
from xaikit.io import write_json_atomically
from xaikit.options import OptionText
from xaikit.registry import Registry

__all__ = [
    "COMPARISON", "GRID_FILE", "Axis", "check_runs", "default_parent", "describe", "expand", "finished_summary", "parse_axis",
    "read_grid_file", "start_grid", "undo_grid", "value_text",
]

GRID_FILE = "grid.json"
FIELDS = {"dataset": str, "backbone": str, "segmenter": str, "matcher": str, "explainer": str, "k": int, "limit": int, "seed": int, "batch_size": int}
"""The :class:`BenchConfig` fields an axis may vary, with their types; any other key is a component option."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
COMPARISON = "comparison"
"""The folder under the grid's parent that receives the runs' comparison report."""
_RESERVED = (".", "..", COMPARISON, GRID_FILE)


@dataclasses.dataclass(frozen=True)
class Axis:
    """One varied setting.

    Attributes:
        key: a :data:`FIELDS` name, or an option key as ``--option`` takes it.
        values: the values, in order (command-line text, or TOML-typed values).
    """

    key: str
    values: tuple[Any, ...]


def parse_axis(text: str) -> Axis:
    """``"k=1,3,5"`` -> ``Axis("k", ("1", "3", "5"))``.

    Raises:
        XaikitError: no ``=``, an empty key, or no value.
    """
    key, equals, values = text.partition("=")
    items = tuple(value.strip() for value in values.split(",") if value.strip())
    if not equals or not key.strip() or not items:
        raise XaikitError(f"--grid {text!r} must read KEY=VALUE,VALUE,... (e.g. k=1,3,5)")
    return Axis(key.strip(), items)


def read_grid_file(path: Path) -> tuple[list[Axis], list[dict[str, Any]]]:
    """The axes of a TOML experiment file's ``[grid]`` table, and its explicit ``[[run]]`` tables.

    ``[grid]`` maps each setting to a list of values (their product is run); each ``[[run]]`` table is
    one run's settings (``name`` optionally names its directory). A file may hold either or both.

    Raises:
        XaikitError: the file is missing or not TOML, holds neither, or a value is of the wrong kind.
    """
    try:
        table = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise XaikitError(f"cannot read the experiment file {path}: {error}") from None
    grid, runs = table.get("grid", {}), table.get("run", [])
    if not isinstance(grid, dict) or not isinstance(runs, list) or not (grid or runs):
        raise XaikitError(f"the experiment file {path} has neither a [grid] table of settings to vary nor [[run]] tables")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise XaikitError(f"the experiment file {path}: grid.{key} must be a non-empty list of values")
        axes.append(Axis(key, tuple(values)))
    for number, run in enumerate(runs, start=1):
        if not isinstance(run, dict) or not run:
            raise XaikitError(f"the experiment file {path}: [[run]] number {number} must be a table of settings")
    return axes, [dict(run) for run in runs]


def expand(base: BenchConfig, axes: Sequence[Axis], runs: Sequence[dict[str, Any]] = ()) -> list[tuple[str, BenchConfig]]:
    """Every combination of the axes' values (in axis order), then each explicit run, applied to ``base``, with names.

    A name joins the run's settings as ``key=value``, each value written canonically (:func:`value_text`:
    ``true``/``false`` whether it came from the command line or from TOML), unless the run names itself.

    Raises:
        XaikitError: an axis given twice, two runs of one name, a name no run directory may have
            (``.``, ``..``, ``comparison``, ``grid.json``), or a field value of the wrong type.
    """
    settings = _settings(axes, runs)
    configs = [_applied(base, setting) for setting in settings]
    names = [_UNSAFE.sub("_", str(setting.pop("name", None) or ",".join(f"{key}={value_text(value)}" for key, value in setting.items()))) for setting in settings]
    if len(set(names)) != len(names):
        raise XaikitError(f"the experiment names the run {next(name for name in names if names.count(name) > 1)} twice")
    for name in names:
        if name in _RESERVED:
            raise XaikitError(f"a grid run cannot be named {name!r}, which {'is not a directory name' if name in ('.', '..') else 'the grid writes itself'}; name it otherwise")
    return list(zip(names, configs, strict=True))


def describe(axes: Sequence[Axis], runs: Sequence[dict[str, Any]] = ()) -> list[str]:
    """What each run of :func:`expand` sets, in its order: ``k = 5, dataset.crop_to_bbox = false``, or ``defaults``.

    An explicit run's settings other than ``name``; a combination's axis values.
    """
    described = []
    for setting in _settings(axes, runs):
        shown = [f"{key} = {value_text(value)}" for key, value in setting.items() if key != "name"]
        described.append(", ".join(shown) or "defaults")
    return described


def value_text(value: Any) -> str:
    """A setting's value as names and tables show it: text as written, anything else as JSON (``true``, ``5``, ``0.5``)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _settings(axes: Sequence[Axis], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict of settings per run: the product of the axes (in axis order), then the explicit runs."""
    keys = [axis.key for axis in axes]
    if len(set(keys)) != len(keys):
        raise XaikitError(f"--grid names {', '.join(sorted({key for key in keys if keys.count(key) > 1}))} twice")
    settings = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(axis.values for axis in axes))] if axes else []
    return settings + [dict(run) for run in runs]


def _applied(base: BenchConfig, setting: dict[str, Any]) -> BenchConfig:
    """``base`` with one run's settings: fields replaced, other keys routed as ``--option`` values."""
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in setting.items():
        if key == "name":
            continue
        if key in FIELDS:
            fields[key] = _field(key, value)
        else:
            options[key] = OptionText(value) if isinstance(value, str) else value
    routed = split_options(options, base.metrics)
    merged = {kind: {**base.options.get(kind, {}), **routed.get(kind, {})} for kind in {*base.options, *routed}}
    return dataclasses.replace(base, **fields, options=merged)


def _field(key: str, value: Any) -> Any:
    kind = FIELDS[key]
    if kind is int:
        try:
            number = int(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int):
            raise XaikitError(f"--grid {key} takes whole numbers, got {value!r}")
        return number
    return str(value)


def check_runs(runs: Sequence[tuple[str, BenchConfig]], registry: Registry | None = None) -> None:
    """Refuse any run whose fields, component names or options no run could take, building nothing.

    The checks are :func:`~xaikit.bench.runner.build_run`'s (names through the registry, option names
    the factories take, values of their declared types), made for every run before the grid writes
    anything, so that a refused grid leaves nothing behind that would refuse the corrected command.

    Raises:
        XaikitError: the first bad setting, its sentence prefixed with the run's name.
    """
    from xaikit import get_registry

    registry = registry or get_registry()
    for name, config in runs:
        try:
            config.validate()
            _check_components(config, registry)
        except XaikitError as error:
            error.args = (f"grid run {name}: {error}",)
            raise


def _check_components(config: BenchConfig, registry: Registry) -> None:
    """The components and options ``config`` names, as :func:`~xaikit.bench.runner.build_run` routes them."""
    dataset_options = dict(config.options.get("dataset", {}))
    if config.data_root is not None:
        dataset_options["root"] = config.data_root
    _check_options(registry, "dataset", config.dataset, dataset_options)
    _check_options(registry, "explainer", config.explainer, config.options.get("explainer", {}))
    if config.k is not None and not registry.accepts("explainer", config.explainer, "k"):
        raise UnknownOptionError(f"explainer '{config.explainer}' takes no k")
    for kind in ("backbone", "segmenter", "matcher"):
        name = getattr(config, kind) or default_component_name(registry, config.explainer, kind)
        if not registry.accepts("explainer", config.explainer, kind):
            if getattr(config, kind) is not None or kind in config.options:
                raise UnknownOptionError(f"explainer '{config.explainer}' takes no {kind}")
        elif name is None:
            if kind in config.options:
                raise UnknownOptionError(f"{kind} options were given but no {kind}; name one with --{kind}")
        else:
            _check_options(registry, kind, name, config.options.get(kind, {}))
    for name in config.metrics:
        _check_options(registry, "metric", name, config.options.get(f"metric.{name}", {}))


def _check_options(registry: Registry, kind: str, name: str, options: dict[str, Any]) -> None:
    """``name`` is registered, its factory takes every option, and each value is of the declared type."""
    registry.check_options(kind, name, options)
    registry.coerce(kind, name, options)


def finished_summary(path: Path, config: BenchConfig, registry: Registry | None = None) -> dict[str, Any] | None:
    """The ``summary.json`` of a finished run of ``config`` in ``path``, or ``None``.

    A run is finished when xaikit recorded it (``config.json`` with ``versions.xaikit``), its summary
    holds a value for every metric of ``config`` (a metric that failed records none), and what it
    recorded agrees with ``config``: dataset, data root, metrics, sample, bootstrap, the component names
    and every option ``config`` sets. Anything else is left to :func:`~xaikit.bench.runner.run_bench`,
    which resumes it or refuses it.
    """
    from xaikit import get_registry

    path = Path(path).expanduser()
    try:
        recorded = json.loads((path / CONFIG).read_text())
        summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("versions"), dict) or "xaikit" not in recorded["versions"]:
        return None
    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    if not isinstance(metrics, dict) or not all(isinstance(metrics.get(name), dict) and metrics[name].get("value") is not None for name in config.metrics):
        return None
    try:
        same = _recorded_as(recorded, config, registry or get_registry())
    except (XaikitError, KeyError, TypeError, AttributeError):
        return None
    return summary if same else None


def _recorded_as(recorded: dict[str, Any], config: BenchConfig, registry: Registry) -> bool:
    """Whether a run's ``config.json`` records what ``config`` asks for."""
    root = None if config.data_root is None else os.path.expanduser(config.data_root)
    wanted = {"dataset": config.dataset, "data_root": root, "metrics": list(config.metrics), "limit": config.limit, "seed": config.seed, "bootstrap": config.bootstrap}
    if any(recorded.get(key) != value for key, value in wanted.items()):
        return False
    components = recorded["components"]
    if components["explainer"]["name"] != config.explainer or (config.k is not None and recorded.get("k") != config.k):
        return False
    for kind in ("backbone", "segmenter", "matcher"):
        name = getattr(config, kind) or (default_component_name(registry, config.explainer, kind) if kind in components else None)
        if (components[kind]["name"] if kind in components else None) != name:
            return False
    for label, options in config.options.items():
        entry = components[label]
        given = json.loads(json.dumps(registry.coerce(label.partition(".")[0], entry["name"], options), default=str))
        if any(entry["options"].get(key) != value for key, value in given.items()):
            return False
    return True


def start_grid(parent: Path, axes: Sequence[Axis], names: Sequence[str], *, resume: bool, overwrite: bool) -> list[Path]:
    """Record the grid in ``parent/grid.json``, refusing to start over a grid already there without a flag.

    With ``overwrite``, what the previous grid wrote and this one will not is removed first: the runs its
    ``grid.json`` lists that ``names`` does not, and its ``comparison/`` report. Only files xaikit wrote
    are deleted (the rules of :class:`~xaikit.bench.rundir.RunDirectory` and of ``xaikit compare``'s
    output); a folder holding anything else is refused, naming what it holds, before anything is deleted.

    Returns:
        What this call created (``grid.json`` and the folders it made, innermost first), for :func:`undo_grid`;
        empty when a previous grid's record was there.

    Raises:
        XaikitError: ``parent`` is a file, or holds a grid and neither ``resume`` nor ``overwrite`` is
            given, or an old run or report to remove holds a file xaikit did not write.
    """
    parent = Path(parent).expanduser()
    if parent.exists() and not parent.is_dir():
        raise XaikitError(f"grid directory {parent} is a file")
    previous = parent / GRID_FILE
    existed = previous.exists()
    if existed:
        if not _is_grid_record(previous):
            raise XaikitError(f"{previous} is not a grid record xaikit wrote; choose another --out")
        if not (resume or overwrite):
            raise XaikitError(f"{parent} already holds a grid; pass --resume to finish it or --overwrite to run it again")
        if overwrite:
            _remove_stale(parent, json.loads(previous.read_text())["runs"], names)
    created = [directory for directory in (parent, *parent.parents) if not directory.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    record = {"axes": [{"key": axis.key, "values": list(axis.values)} for axis in axes], "runs": list(names)}
    write_json_atomically(previous, json.loads(json.dumps(record, default=str)))
    return [] if existed else [previous, *created]


def undo_grid(created: Sequence[Path]) -> None:
    """Remove what :func:`start_grid` created (for a grid refused before any run recorded its configuration)."""
    for path in created:
        with contextlib.suppress(OSError):  # a folder something else has written into stays
            path.unlink() if path.name == GRID_FILE else path.rmdir()


def _remove_stale(parent: Path, old: list[Any], names: Sequence[str]) -> None:
    """Delete the old grid's runs that ``names`` lacks and its comparison report; refuse first if any holds a foreign file."""
    stale = [parent / name for name in old if isinstance(name, str) and name not in names and name not in _RESERVED and _UNSAFE.sub("_", name) == name]
    report = parent / COMPARISON
    claimed: list[RunDirectory] = []
    deleted = False
    try:
        for path in stale:
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                raise XaikitError(f"refusing to overwrite the grid in {parent}: its old run {path.name} is not a folder xaikit wrote; move it or choose another --out")
            if path.exists():
                claimed.append(RunDirectory.claim(path, resume=False, overwrite=True))  # locked, and refused if it holds a foreign file
        ours = [*previous_files(report), MANIFEST]
        if report.is_symlink() or (report.exists() and not report.is_dir()):
            raise XaikitError(f"refusing to overwrite the grid in {parent}: {report} is not a folder xaikit wrote; move it or choose another --out")
        foreign = sorted(entry.name for entry in report.iterdir() if entry.name not in ours and not TEMPORARY.match(entry.name)) if report.exists() else []
        if foreign:
            raise XaikitError(
                f"refusing to overwrite the grid in {parent}: its old report {report} holds {', '.join(foreign[:3])}"
                f"{f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''}, which xaikit did not write; move those files or choose another --out"
            )
        deleted = True
        for run in claimed:
            for entry in run.path.iterdir():
                if entry.name != LOCK:
                    entry.unlink()
        if report.exists():
            for entry in report.iterdir():
                if entry.name in ours or TEMPORARY.match(entry.name):
                    entry.unlink()
            report.rmdir()
    finally:
        for run in claimed:
            run.release()  # removes the lock file
            if deleted:
                with contextlib.suppress(OSError):
                    run.path.rmdir()


def _is_grid_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("axes"), list) and isinstance(record.get("runs"), list)


def default_parent(base: BenchConfig, stamp: str) -> Path:
    """``runs/grid-<dataset>-<explainer>-<time>``."""
    return Path("runs") / f"grid-{base.dataset}-{base.explainer}-{stamp}"
