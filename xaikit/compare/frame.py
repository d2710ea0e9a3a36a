"""Runs as a pandas DataFrame (the ``pandas`` extra): :func:`load_runs`, public as ``xaikit.load_runs``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from xaikit.errors import MissingDependencyError, XaikitError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_runs"]


def load_runs(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], what: Literal["items", "summaries"] = "items") -> pd.DataFrame:
    """Load finished ``xaikit bench`` runs into one pandas DataFrame, for analysis in a notebook.

    ``xaikit.load_runs(["runs/k1", "runs/k3"]).groupby("run").correct.mean()``

    Args:
        paths: one run directory or several; none of them is modified.
        what: ``"items"`` for one row per image record of ``items.jsonl`` (columns ``run``, ``run_path``,
            ``status`` (``"evaluated"`` or ``"skipped"``), then the record's own: ``index``, ``image_id``,
            ``path``, ``label``, ``class``, ``prediction``, ``predicted_class``, ``correct``, ``scores`` (a
            list), ``details`` (a dict), ``reason`` for a skipped image); ``"summaries"`` for one row per run
            and metric of ``summary.json`` (``run``, ``run_path``, ``metric``, ``value``, ``higher_is_better``,
            ``low``, ``high``, ``level``, ``images``, ``evaluated``, ``skipped``).
            Both add one ``config.<setting>`` column per setting on which the runs' ``config.json`` differ
            (e.g. ``config.k``), versions, timing and device aside.

    Raises:
        MissingDependencyError: pandas is not installed.
        XaikitError: ``what`` is neither, a path given twice, or a path that is not a finished run.
    """
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError("xaikit.load_runs needs pandas, which is not installed; pip install 'xaikit[pandas]'") from None
    from xaikit.compare.runs import differing, read_runs

    if what not in ("items", "summaries"):
        raise XaikitError(f"load_runs reads 'items' or 'summaries', not {what!r}")
    runs = read_runs([paths] if isinstance(paths, str | os.PathLike) else list(paths))
    settings = [run.settings() for run in runs]
    keys = differing(settings)
    frames = []
    for run, setting in zip(runs, settings):
        rows = _items(run.items) if what == "items" else _summaries(run.summary)
        frame = pd.DataFrame(rows)
        frame.insert(0, "run_path", str(run.path))
        frame.insert(0, "run", run.name)
        frames.append(frame.assign(**{f"config.{key}": [setting.get(key)] * len(frame) for key in keys}))
    return pd.concat(frames, ignore_index=True)


def _items(records: list[dict]) -> list[dict]:
    return [{"status": "evaluated", **record} if record.get("status") != "skipped" else record for record in records]


def _summaries(summary: dict) -> list[dict]:
    counts = {"images": summary.get("images"), "evaluated": summary.get("evaluated"), "skipped": len(summary.get("skipped") or [])}
    return [
        {
            "metric": name, "value": metric.get("value"), "higher_is_better": metric.get("higher_is_better"),
            "low": (metric.get("interval") or {}).get("low"), "high": (metric.get("interval") or {}).get("high"),
            "level": (metric.get("interval") or {}).get("level"), **counts,
        }
        for name, metric in summary["metrics"].items()
    ]
