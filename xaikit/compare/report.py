"""Writing a comparison: Markdown, one CSV per table, PNG plots and a standalone HTML page, into a guarded folder.

The folder must be new, empty, or a previous ``xaikit compare`` output (marked by ``compare.json``, which
lists the files it wrote); a rewrite replaces those files only. A folder inside a compared run is refused,
so that a comparison never changes a run directory.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from xaikit import __version__
from xaikit.bench.rundir import TEMPORARY
from xaikit.compare.plots import accuracy_plot, per_class_plot
from xaikit.compare.runs import MANIFEST, Run
from xaikit.compare.tables import Comparison, Table
from xaikit.errors import XaikitError
from xaikit.io import write_bytes_atomically, write_json_atomically

__all__ = ["check_out", "previous_files", "write_report"]

def check_out(out: Path, runs: Sequence[Run]) -> None:
    """Refuse an ``out`` that is a file, lies in a compared run, or holds anything but a previous comparison.

    Raises:
        XaikitError: naming the problem and what to do about it.
    """
    if out.exists() and not out.is_dir():
        raise XaikitError(f"--out {out} is a file; choose a folder for the comparison")
    target = out.resolve()
    for run in runs:
        if target == run.path.resolve() or run.path.resolve() in target.parents:
            raise XaikitError(f"--out {out} is inside run {run.path}, and xaikit compare never writes into a run; choose another --out")
    if not out.exists():
        return
    ours = set(previous_files(out)) | ({MANIFEST} if _is_manifest(out / MANIFEST) else set())
    foreign = sorted({entry.name for entry in out.iterdir()} - ours)
    foreign = [name for name in foreign if not TEMPORARY.match(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise XaikitError(f"--out {out} holds {shown}, which is not a previous xaikit compare output; choose an empty or new folder")


def _read_manifest(path: Path) -> dict | None:
    """``compare.json`` if xaikit compare wrote it (it carries ``xaikit_compare``), else ``None``."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "xaikit_compare" in manifest else None


def _is_manifest(path: Path) -> bool:
    return _read_manifest(path) is not None


def previous_files(out: Path) -> list[str]:
    """The files a previous comparison in ``out`` wrote, from its ``compare.json`` (none when there is none)."""
    manifest = _read_manifest(out / MANIFEST)
    files = manifest.get("files") if manifest is not None else None
    return [name for name in files if isinstance(name, str) and "/" not in name] if isinstance(files, list) else []


def write_report(comparison: Comparison, runs: Sequence[Run], out: Path) -> list[str]:
    """Write the comparison into ``out`` (checked by :func:`check_out` first) and return the files written.

    ``comparison.md`` links the plots, ``comparison.html`` inlines them (base64), and each table is also a
    CSV of raw values; ``compare.json`` records the runs and files, marking the folder as a comparison.
    """
    check_out(out, runs)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(comparison)
    files = {f"{table.name}.csv": _csv(table).encode() for table in comparison.tables}
    files.update(plots)
    files["comparison.md"] = _markdown(comparison, runs, list(plots)).encode()
    files["comparison.html"] = _html(comparison, runs, plots).encode()
    for name, data in files.items():
        write_bytes_atomically(out / name, data)
    for stale in set(previous_files(out)) - set(files):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()
    written = sorted(files)
    write_json_atomically(out / MANIFEST, {"xaikit_compare": __version__, "runs": [str(run.path) for run in runs], "files": written})
    return [*written, MANIFEST]


def _plots(comparison: Comparison) -> dict[str, bytes]:
    plots = {}
    if comparison.accuracy:
        plots["accuracy.png"] = accuracy_plot(comparison.accuracy)
    if comparison.classes:
        plots["per_class.png"] = per_class_plot(comparison.classes, comparison.runs, comparison.per_class)
    return plots


def _csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in table.columns])
    writer.writerows(["" if value is None else value for value in row] for row in table.rows)
    return buffer.getvalue()


def _markdown(comparison: Comparison, runs: Sequence[Run], plots: Sequence[str]) -> str:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"

    lines = [f"# Comparison of {len(runs)} runs", "", *(f"- `{run.name}`: `{run.path}`" for run in runs), ""]
    for table in comparison.tables:
        lines += [f"## {table.title}", ""]
        if table.rows:
            lines += [cells([column.name for column in table.columns]), cells(["---"] * len(table.columns)), *map(cells, table.shown()), ""]
        lines += [table.note, ""] if table.note else []
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines).rstrip() + "\n"


def _html(comparison: Comparison, runs: Sequence[Run], plots: dict[str, bytes]) -> str:
    def row(tag: str, values: Sequence[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(value)}</{tag}>" for value in values) + "</tr>"

    body = [f"<h1>Comparison of {len(runs)} runs</h1>", "<ul>"]
    body += [f"<li><code>{html.escape(run.name)}</code>: <code>{html.escape(str(run.path))}</code></li>" for run in runs]
    body.append("</ul>")
    for table in comparison.tables:
        body.append(f"<h2>{html.escape(table.title)}</h2>")
        if table.rows:
            body += ["<table>", row("th", [column.name for column in table.columns]), *(row("td", shown) for shown in table.shown()), "</table>"]
        body += [f"<p>{html.escape(table.note)}</p>"] if table.note else []
    body += [f'<p><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}"></p>' for name, data in plots.items()]
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
             "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>xaikit compare</title><style>{style}</style></head>\n'
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
