"""The comparison of runs as tables: configuration differences, metrics with intervals, paired tests, per-class accuracy.

Every table keeps raw values (numbers, text, ``None``); :mod:`xaikit.compare.report` and the command
line render the same tables as Markdown, CSV, HTML and a rich table.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaikit.compare.runs import Run, differing
from xaikit.compare.statistics import paired_test, per_class_accuracy

__all__ = ["Column", "Comparison", "Table", "compare_runs"]


@dataclass(frozen=True)
class Column:
    """A table column: its header, and the format spec of its numbers (``".2f"``; ``""`` for ``str()``)."""

    name: str
    spec: str = ""


@dataclass(frozen=True)
class Table:
    """One table of the comparison.

    Attributes:
        name: the stem of its CSV file (``metrics`` -> ``metrics.csv``).
        title: its heading.
        columns: its columns.
        rows: its rows, one raw value per column (``None`` for none).
        note: a sentence shown under the table (``""`` for none).
    """

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    note: str = ""

    def shown(self) -> list[list[str]]:
        """The rows as display text: numbers in their column's format, ``—`` for none."""
        return [[_show(value, column.spec) for value, column in zip(row, self.columns)] for row in self.rows]


@dataclass(frozen=True)
class Comparison:
    """Everything ``xaikit compare`` reports.

    Attributes:
        runs: the runs' names, in the order given.
        tables: the configuration, metrics, paired-test and per-class tables.
        accuracy: ``(run, value, low, high)`` of each run's ``accuracy`` metric (``low``/``high`` ``None``
            without an interval), for the accuracy plot.
        classes: the class names, the rows of ``per_class``.
        per_class: ``(classes, runs)`` float64 top-1 accuracy in percent, NaN where a run saw no image of a class.
    """

    runs: list[str]
    tables: list[Table]
    accuracy: list[tuple[str, float, float | None, float | None]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    per_class: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True)
class _Evaluated:
    """A run's evaluated images as arrays: ``image_ids``, ``labels`` ``(N,)`` int64 and ``correct`` ``(N,)`` bool."""

    image_ids: np.ndarray
    labels: np.ndarray
    correct: np.ndarray

    @classmethod
    def of(cls, run: Run) -> _Evaluated:
        records = run.evaluated
        return cls(
            np.array([record["image_id"] for record in records], dtype=np.int64),
            np.array([record["label"] for record in records], dtype=np.int64),
            np.array([bool(record["correct"]) for record in records], dtype=bool),
        )


def compare_runs(runs: Sequence[Run], *, resamples: int, seed: int) -> Comparison:
    """Compare finished runs side by side.

    Args:
        runs: the runs, as :func:`~xaikit.compare.runs.read_runs` reads them.
        resamples: resamples of each pair's paired bootstrap (0: no interval).
        seed: seeds every pair's resampling.
    """
    evaluated = [_Evaluated.of(run) for run in runs]
    classes, per_class, per_class_table = _per_class(runs, evaluated)
    return Comparison(
        runs=[run.name for run in runs],
        tables=[_config(runs), _metrics(runs), _pairs(runs, evaluated, resamples, seed), per_class_table],
        accuracy=_accuracy(runs),
        classes=classes,
        per_class=per_class,
    )


def _config(runs: Sequence[Run]) -> Table:
    settings = [run.settings() for run in runs]
    rows = [(key, *(None if key not in setting else _text(setting[key]) for setting in settings)) for key in differing(settings)]
    note = "" if rows else "The runs' configurations are identical (versions, timing and device aside)."
    return Table("config", "Configuration differences", (Column("setting"), *(Column(run.name) for run in runs)), rows, note)


def _metrics(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        for name, metric in run.summary["metrics"].items():
            interval = metric.get("interval") or {}
            details = ", ".join(f"{key} {value:.2f}" for key, value in (metric.get("details") or {}).items() if isinstance(value, float))
            over = str(interval.get("method", "")).rpartition(" over ")[2] or None  # "images" or "units"
            rows.append((run.name, name, metric.get("value"), interval.get("low"), interval.get("high"), over,
                         "higher" if metric.get("higher_is_better") else "lower", run.summary.get("evaluated"), details))
    columns = (Column("run"), Column("metric"), Column("value", ".2f"), Column("95% low", ".2f"), Column("95% high", ".2f"),
               Column("interval over"), Column("better"), Column("images"), Column("details"))
    note = ("Intervals are each run's own 95% percentile bootstrap from its summary.json, over its images or, for a mean over units "
            "(consistency and stability: class x concept units; faithfulness: the images' deletion gaps), over those units.")
    return Table("metrics", "Metrics", columns, rows, note)


def _pairs(runs: Sequence[Run], evaluated: Sequence[_Evaluated], resamples: int, seed: int) -> Table:
    rows, partial = [], False
    for (a, run_a), (b, run_b) in itertools.combinations(enumerate(runs), 2):
        common, index_a, index_b = np.intersect1d(evaluated[a].image_ids, evaluated[b].image_ids, return_indices=True)
        sizes = (len(evaluated[a].image_ids), len(evaluated[b].image_ids))
        if run_a.config.get("dataset") != run_b.config.get("dataset") or not len(common):
            rows.append((run_a.name, run_b.name, 0, None, None, None, None, None, None, "no common images"))
            continue
        if not np.array_equal(evaluated[a].labels[index_a], evaluated[b].labels[index_b]):
            rows.append((run_a.name, run_b.name, 0, None, None, None, None, None, None, "same image ids with other labels: not the same images"))
            continue
        test = paired_test(evaluated[a].correct[index_a], evaluated[b].correct[index_b], resamples=resamples, seed=seed)
        note = "" if sizes == (len(common), len(common)) else f"on the {len(common)} common images ({sizes[0]} and {sizes[1]} evaluated)"
        partial |= bool(note)
        rows.append((run_a.name, run_b.name, test.images, test.difference, test.low, test.high, test.a_only, test.b_only, test.p_value, note))
    columns = (Column("run A"), Column("run B"), Column("images"), Column("A − B (points)", "+.2f"), Column("95% low", "+.2f"),
               Column("95% high", "+.2f"), Column("only A right"), Column("only B right"), Column("McNemar p", ".3g"), Column("note"))
    note = (f"Top-1 accuracy difference on the images both runs evaluated: paired bootstrap ({resamples} resamples, seed {seed}) "
            "and McNemar's exact test." + (" Some pairs evaluated different images and are compared on the images they share." if partial else ""))
    return Table("pairs", "Paired tests", columns, rows, note)


def _per_class(runs: Sequence[Run], evaluated: Sequence[_Evaluated]) -> tuple[list[str], np.ndarray, Table]:
    names = {record["label"]: record.get("class") for run in runs for record in run.evaluated}
    labels = sorted(names)
    size = labels[-1] + 1 if labels else 0
    columns = [per_class_accuracy(e.labels, e.correct, size) for e in evaluated]
    accuracy = np.stack([column[0] for column in columns], axis=1)[labels] if labels else np.zeros((0, len(runs)))
    counts = np.stack([column[1] for column in columns], axis=1)[labels] if labels else np.zeros((0, len(runs)), dtype=np.int64)
    classes = [str(names[label]) if names[label] is not None else str(label) for label in labels]
    rows = [(name, _counts(count), *(None if np.isnan(value) else float(value) for value in row)) for name, count, row in zip(classes, counts, accuracy)]
    table = Table("per_class", "Per-class top-1 accuracy (%)", (Column("class"), Column("images"), *(Column(run.name, ".1f") for run in runs)), rows,
                  "Images per class differ between runs (one count per run)." if any("/" in str(row[1]) for row in rows) else "")
    return classes, accuracy, table


def _accuracy(runs: Sequence[Run]) -> list[tuple[str, float, float | None, float | None]]:
    points = []
    for run in runs:
        metric = run.summary["metrics"].get("accuracy") or {}
        if isinstance(metric.get("value"), int | float):
            interval = metric.get("interval") or {}
            points.append((run.name, float(metric["value"]), interval.get("low"), interval.get("high")))
    return points


def _counts(counts: np.ndarray) -> int | str:
    """One class's image count: one number when every run that saw the class saw as many images, else each run's."""
    seen = {int(count) for count in counts if count}
    return seen.pop() if len(seen) == 1 else "/".join(str(int(count)) for count in counts)


def _text(value: Any) -> str:
    """A configuration value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _show(value: Any, spec: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)
