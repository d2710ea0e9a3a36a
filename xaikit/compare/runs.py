"""Reading finished ``xaikit bench`` run directories for comparison; nothing here writes to them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaikit.bench.rundir import CONFIG, ITEMS, SUMMARY, record_problem
from xaikit.errors import XaikitError

__all__ = ["IGNORED_CONFIG", "MANIFEST", "Run", "differing", "flatten", "read_runs"]

MANIFEST = "compare.json"
"""The file that marks a folder as ``xaikit compare`` output (it lists the files the comparison wrote)."""

IGNORED_CONFIG = ("versions", "timing", "device", "device_requested")
"""Top-level ``config.json`` keys that do not decide results, left out of configuration differences."""


@dataclass(frozen=True)
class Run:
    """One finished run, as read from its directory.

    Attributes:
        name: how tables name it: the directory's name, or the path as given when two runs share a name.
        path: the run directory.
        config: ``config.json``.
        summary: ``summary.json``.
        items: every record of ``items.jsonl`` in file order, skipped images included.
    """

    name: str
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        """The records of evaluated images (skipped ones left out)."""
        return [record for record in self.items if record.get("status") != "skipped"]

    def settings(self) -> dict[str, Any]:
        """The flattened configuration without :data:`IGNORED_CONFIG`: ``{"components.explainer.options.k": 3, ...}``."""
        return flatten({key: value for key, value in self.config.items() if key not in IGNORED_CONFIG})


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dictionaries as one level of dotted keys; lists and scalars are kept as values."""
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        if isinstance(inner, dict) and inner:
            flat.update(flatten(inner, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = inner
    return flat


def differing(settings: Sequence[dict[str, Any]]) -> list[str]:
    """The sorted keys of flattened settings (:meth:`Run.settings`) whose values differ, or that some lack."""
    keys = set().union(*settings)
    return sorted(key for key in keys if len({json.dumps(setting[key], sort_keys=True) if key in setting else None for setting in settings}) > 1)


def read_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Read and check finished runs; each is named by its directory, or by its path where names collide.

    Raises:
        XaikitError: a path given twice, or one that is not a finished ``xaikit bench`` run (see :func:`_read`).
    """
    resolved = [Path(path).expanduser() for path in paths]
    seen: dict[Path, Path] = {}
    for path in resolved:
        if path.resolve() in seen:
            raise XaikitError(f"run {path} is given twice (as {seen[path.resolve()]} and {path}); name each run once")
        seen[path.resolve()] = path
    names = [path.resolve().name for path in resolved]
    return [_read(path, name if names.count(name) == 1 else str(path)) for path, name in zip(resolved, names)]


def _read(path: Path, name: str) -> Run:
    """One run directory, refused in one sentence unless it is a finished ``xaikit bench`` run."""
    if not path.is_dir():
        raise XaikitError(f"{path} is not a directory; xaikit compare takes run directories written by xaikit bench")
    if (path / MANIFEST).exists():
        raise XaikitError(f"{path} is an xaikit compare output, not a run; pass the run directories it compared")
    config = _json(path / CONFIG)
    if not (isinstance(config, dict) and isinstance(config.get("versions"), dict) and "xaikit" in config["versions"]):
        raise XaikitError(f"{path} is not an xaikit run (it has no config.json written by xaikit); pass directories written by xaikit bench")
    if not (path / ITEMS).exists():
        raise XaikitError(f"{path} holds no {ITEMS}: it is not an xaikit bench run (an xaikit train run is compared through the bench run of its checkpoint)")
    if not (path / SUMMARY).exists():
        raise XaikitError(f"run {path} is unfinished (it has no {SUMMARY}); finish it with xaikit bench --out {path} --resume")
    summary = _json(path / SUMMARY)
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise XaikitError(f"{path / SUMMARY} is not a summary xaikit writes; rerun the benchmark with --resume to write it again")
    return Run(name=name, path=path, config=config, summary=summary, items=list(_records(path / ITEMS)))


def _json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of an ``items.jsonl``, each checked as :mod:`xaikit.bench.rundir` checks them on resume."""
    with path.open() as file:
        for number, line in enumerate(file, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            problem = record_problem(record)
            if not problem and record.get("status") != "skipped" and not isinstance(record.get("image_id"), int):
                problem = "has no integer image_id"
            if problem:
                raise XaikitError(f"{path} line {number} {problem}; xaikit compare reads only the records xaikit bench writes")
            yield record
