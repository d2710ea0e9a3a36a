"""``xaikit compare``: finished runs side by side, with paired tests, written as Markdown, CSV, PNG and HTML."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table as RichTable

from xaikit.bench.sampling import REFERENCE_SEED
from xaikit.cli.console import add_debug, stderr, stdout
from xaikit.errors import XaikitError

if TYPE_CHECKING:
    from xaikit.compare.tables import Table

SHOWN_CLASSES = 20
"""The per-class table is printed up to this many classes; beyond, only its CSV and plot hold it."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``compare`` to the top-level subcommands."""
    compare = commands.add_parser(
        "compare",
        help="compare finished bench runs side by side, with paired tests and plots",
        description="Compare finished xaikit bench runs: configuration differences, every metric with its interval, "
        "a paired bootstrap and McNemar's exact test of the top-1 accuracy difference for each pair of runs on the same images, "
        "and per-class accuracy. Prints the tables and writes comparison.md, comparison.html (standalone), one CSV per table "
        "and PNG plots to --out. The runs are only read.",
    )
    compare.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories written by xaikit bench (at least two)")
    compare.add_argument("--out", type=Path, help="folder for the report: new, empty or a previous comparison (default comparisons/compare-<time>)")
    compare.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples of each paired bootstrap; 0 for none (default 1000)")
    compare.add_argument("--seed", type=int, default=REFERENCE_SEED, help=f"seed of the paired bootstrap's resampling (default {REFERENCE_SEED}, as xaikit bench)")
    add_debug(compare)
    compare.set_defaults(handler=run)


def _rich(table: Table) -> RichTable:
    shown = RichTable(title=escape(table.title), caption=escape(table.note) or None)
    for column in table.columns:
        shown.add_column(escape(column.name), justify="right" if column.spec else "left")
    for row in table.shown():
        shown.add_row(*map(escape, row))
    return shown


def run(args: argparse.Namespace) -> int:
    """Read the runs, compare them, print the tables and write the report."""
    if len(args.runs) < 2:
        raise XaikitError("xaikit compare needs at least two runs to compare, got one")
    if args.bootstrap < 0:
        raise XaikitError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    start = time.perf_counter()
    out = args.out or Path("comparisons") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    files = report(args.runs, out, resamples=args.bootstrap, seed=args.seed, show=True)
    stdout.print(f"wrote {escape(str(out))}/{{{', '.join(files)}}} in {time.perf_counter() - start:.1f} s")
    stderr.print(f"[dim]open {escape(str(out / 'comparison.html'))} for the report with its plots[/]")
    return 0


def report(paths: list[Path], out: Path, *, resamples: int, seed: int, show: bool) -> list[str]:
    """Compare the runs at ``paths`` and write the report to ``out`` (also ``xaikit bench --grid``'s last step).

    Args:
        show: print the comparison's tables.

    Returns:
        The names of the files written.

    Raises:
        XaikitError: a path is not a finished run, ``out`` is not free, or matplotlib is missing.
    """
    from xaikit.compare.plots import require_matplotlib
    from xaikit.compare.report import check_out, write_report
    from xaikit.compare.runs import read_runs
    from xaikit.compare.tables import compare_runs

    require_matplotlib()
    runs = read_runs(paths)
    check_out(out, runs)
    comparison = compare_runs(runs, resamples=resamples, seed=seed)
    for table in comparison.tables if show else ():
        if table.name == "per_class" and len(table.rows) > SHOWN_CLASSES:
            stdout.print(f"per-class accuracy of {len(table.rows)} classes: see per_class.csv and per_class.png")
            continue
        stdout.print(_rich(table) if table.rows else f"{escape(table.title)}: {escape(table.note)}")
    return write_report(comparison, runs, out)
