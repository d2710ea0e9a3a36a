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
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xaikit.bench.config import BenchConfig, split_options
from xaikit.errors import XaikitError
from xaikit.io import write_json_atomically
from xaikit.options import OptionText

__all__ = ["GRID_FILE", "Axis", "default_parent", "expand", "parse_axis", "read_grid_file", "start_grid"]

GRID_FILE = "grid.json"
FIELDS = {"dataset": str, "backbone": str, "segmenter": str, "matcher": str, "explainer": str, "k": int, "limit": int, "seed": int, "batch_size": int}
"""The :class:`BenchConfig` fields an axis may vary, with their types; any other key is a component option."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


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

    Raises:
        XaikitError: an axis given twice, two runs of one name, or a field value of the wrong type.
    """
    keys = [axis.key for axis in axes]
    if len(set(keys)) != len(keys):
        raise XaikitError(f"--grid names {', '.join(sorted({key for key in keys if keys.count(key) > 1}))} twice")
    settings = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(axis.values for axis in axes))] if axes else []
    settings += [dict(run) for run in runs]
    configs = [_applied(base, setting) for setting in settings]
    names = [_UNSAFE.sub("_", str(setting.pop("name", None) or ",".join(f"{key}={value}" for key, value in setting.items()))) for setting in settings]
    if len(set(names)) != len(names):
        raise XaikitError(f"the experiment names the run {next(name for name in names if names.count(name) > 1)} twice")
    return list(zip(names, configs, strict=True))


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


def start_grid(parent: Path, axes: Sequence[Axis], names: Sequence[str], *, resume: bool, overwrite: bool) -> None:
    """Record the grid in ``parent/grid.json``, refusing to start over a grid already there without a flag.

    Raises:
        XaikitError: ``parent`` is a file, or holds a grid and neither ``resume`` nor ``overwrite`` is given.
    """
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise XaikitError(f"grid directory {parent} is a file")
    if (parent / GRID_FILE).exists():
        if not _is_grid_record(parent / GRID_FILE):
            raise XaikitError(f"{parent / GRID_FILE} is not a grid record xaikit wrote; choose another --out")
        if not (resume or overwrite):
            raise XaikitError(f"{parent} already holds a grid; pass --resume to finish it or --overwrite to run it again")
    parent.mkdir(parents=True, exist_ok=True)
    record = {"axes": [{"key": axis.key, "values": list(axis.values)} for axis in axes], "runs": list(names)}
    write_json_atomically(parent / GRID_FILE, json.loads(json.dumps(record, default=str)))


def _is_grid_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("axes"), list) and isinstance(record.get("runs"), list)


def default_parent(base: BenchConfig, stamp: str) -> Path:
    """``runs/grid-<dataset>-<explainer>-<time>``."""
    return Path("runs") / f"grid-{base.dataset}-{base.explainer}-{stamp}"
