"""``xaikit bench``: fit an explainer, explain a test sample, score it, and write a resumable run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from typing import TYPE_CHECKING

from xaikit.bench.config import BenchConfig, split_options
from xaikit.bench.progress import Progress
from xaikit.bench.sampling import REFERENCE_SEED
from xaikit.cli.console import add_debug, positive_int, stderr, stdout
from xaikit.cli.options import parse_options
from xaikit.distributed import Distributed
from xaikit.quiet import log_to

if TYPE_CHECKING:
    from xaikit.bench.runner import BenchResult

DEFAULT = BenchConfig()


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``bench`` to the top-level subcommands."""
    bench = commands.add_parser(
        "bench",
        help="fit an explainer, explain a test sample and score it",
        description="Fit an explainer on a dataset's training split, explain its test split (or a random "
        "sample of it), score the metrics and write config.json, items.jsonl and summary.json to --out. "
        "With no arguments: synthetic-birds, demo-vit, annotations, mnn, klc, accuracy.",
    )
    add_component_arguments(bench)
    bench.add_argument("--metric", action="append", dest="metrics", metavar="NAME", help="registered metric, repeatable (default accuracy)")
    bench.add_argument("--limit", type=positive_int, help="evaluate a random sample of this many test images (default: all)")
    bench.add_argument("--seed", type=int, default=REFERENCE_SEED, help=f"seed of the --limit sample (default {REFERENCE_SEED}, KLC's reference sample)")
    bench.add_argument("--batch-size", type=positive_int, default=DEFAULT.batch_size, help=f"images per explainer call (default {DEFAULT.batch_size})")
    bench.add_argument("--out", type=Path, help="run directory (default runs/<dataset>-<explainer>-<time>)")
    bench.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished images")
    bench.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    bench.add_argument("--strict", action="store_true", help="stop at an image that cannot be decoded instead of skipping it")
    bench.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2,...",
        help="run every combination: a setting (k, segmenter, explainer, limit, ...) or an option key (label_agreement, "
        "dataset.crop_to_bbox) with its values, repeatable; one run per combination under --out",
    )
    bench.add_argument(
        "--grid-file", type=Path, metavar="FILE",
        help="a TOML experiment file: a [grid] table of the values of each setting, and/or [[run]] tables of single runs",
    )
    bench.add_argument(
        "--bootstrap", type=int, default=DEFAULT.bootstrap, metavar="N",
        help=f"resamples of each metric's 95%% bootstrap interval (over images, or over units for consistency, stability, faithfulness), seeded with --seed; 0 for none (default {DEFAULT.bootstrap})",
    )
    add_debug(bench)
    bench.set_defaults(handler=run)


def add_component_arguments(parser: argparse.ArgumentParser, explainer: str = DEFAULT.explainer, *, parts: bool = True) -> None:
    """The arguments that name a run's components and their options (shared with ``explain`` and ``train``).

    ``parts=False`` leaves out ``--segmenter``, ``--matcher`` and ``--k``, which only part-matching
    explainers (KLC) take: ``xaikit train`` trains explainers that take none of them.
    """
    parser.add_argument("--dataset", default=DEFAULT.dataset, help=f"registered dataset (default {DEFAULT.dataset})")
    parser.add_argument("--data-root", type=Path, help="the dataset's root directory (required for cub)")
    parser.add_argument("--backbone", help="registered backbone (default: the explainer's" + (", demo-vit for klc)" if parts else ")"))
    if parts:
        parser.add_argument("--segmenter", help="registered segmenter (default: the explainer's, annotations for klc)")
        parser.add_argument("--matcher", help="registered matcher (default: the explainer's, mnn for klc)")
    parser.add_argument("--explainer", default=explainer, help=f"registered explainer (default {explainer})")
    if parts:
        parser.add_argument("--k", type=positive_int, help="prototypes retrieved per query (klc: 3, the paper; the reference code used 5)")
    parser.add_argument("--device", default=DEFAULT.device, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KIND.KEY=VALUE",
        help="component option, repeatable: backbone.image_size=224, "
        + ("segmenter.radius=0.1, metric.consistency.mu=0.8" if parts else "dataset.per_class=10, explainer.lr_head=0.01")
        + "; a bare KEY=VALUE goes to the explainer",
    )


class _Bar(Progress):
    """A rich progress bar on a terminal: explaining counts to the total, scoring counts images with no total."""

    def __init__(self) -> None:
        self.bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=stderr, transient=True,
        )
        self.task = None
        self.stage_name = ""

    def stage(self, message: str) -> None:
        self.stage_name = message
        stderr.print(f"[dim]{escape(message)}[/]")

    def start(self, total: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("explaining", total=total, completed=done)

    def advance(self, count: int) -> None:
        self.bar.advance(self.task, count)

    def scored(self, count: int) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task(f"{escape(self.stage_name)} (images)", total=None)
        self.bar.advance(self.task, count)

    def finish(self) -> None:
        self.bar.stop()
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


class _Lines(Progress):
    """Plain progress lines for logs: at most about ten per run."""

    def __init__(self) -> None:
        self.total = self.done = self.shown = self.scoring = 0
        self.next_line = 64

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.shown = done
        print(f"explaining {total - done} of {total} images ({done} already done)", file=stderr.file, flush=True)

    def advance(self, count: int) -> None:
        self.done += count
        if self.done == self.total or self.done - self.shown >= max(1, self.total // 10):
            self.shown = self.done
            print(f"{self.done}/{self.total} images", file=stderr.file, flush=True)

    def stage(self, message: str) -> None:
        self.scoring, self.next_line = 0, 64
        print(message, file=stderr.file, flush=True)

    def scored(self, count: int) -> None:
        """A line at 64, 128, 256, ... images: a handful however long the metric runs."""
        self.scoring += count
        if self.scoring >= self.next_line:
            print(f"{self.scoring} images through the explainer", file=stderr.file, flush=True)
            while self.next_line <= self.scoring:
                self.next_line *= 2


def _progress(distributed: Distributed) -> Progress:
    """A bar on a terminal, plain lines in a log; nothing in processes other than 0 under torchrun."""
    if not distributed.writes:
        return Progress()
    return _Bar() if stderr.is_terminal else _Lines()


def config_from(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the component arguments (and ``bench``'s own, where given) describe."""
    metrics = getattr(args, "metrics", None) or list(DEFAULT.metrics)
    return BenchConfig(
        dataset=args.dataset, data_root=None if args.data_root is None else str(args.data_root),
        backbone=args.backbone, segmenter=args.segmenter, matcher=args.matcher, explainer=args.explainer,
        metrics=metrics, k=args.k, limit=getattr(args, "limit", None), seed=getattr(args, "seed", DEFAULT.seed),
        device=args.device, batch_size=getattr(args, "batch_size", DEFAULT.batch_size), strict=getattr(args, "strict", False),
        bootstrap=getattr(args, "bootstrap", DEFAULT.bootstrap),
        options=split_options(parse_options(args.option), metrics),
    )


def _table(result: BenchResult) -> Table:
    table = Table(title=f"{escape(str(result.path))}: {result.summary['evaluated']} of {result.summary['images']} images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("better")
    table.add_column("details")
    for metric in result.metrics:
        extra = _details(metric.details)
        value = "—" if metric.value is None else f"{metric.value:.2f}"
        table.add_row(metric.name, value, _interval(result.summary["metrics"][metric.name]), "higher" if metric.higher_is_better else "lower", extra)
    over_units = [name for name, entry in result.summary["metrics"].items() if (entry.get("interval") or {}).get("method", "").endswith("over units")]
    if over_units:
        table.caption = f"intervals resample the images; for {', '.join(over_units)}, their units"
    return table


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (or a grid of them) and print a results table; on Ctrl-C say how to resume."""
    from xaikit.bench.runner import run_bench

    if args.grid or args.grid_file:
        return _run_grid(args)

    config = config_from(args)
    distributed = Distributed.from_environment()
    out = args.out or distributed.broadcast(Path("runs") / f"{config.dataset}-{config.explainer}-{time.strftime('%Y%m%d-%H%M%S')}")
    progress = _progress(distributed)
    start = time.perf_counter()
    try:
        with log_to(out):  # third-party output goes to <out>/third-party.log
            result = run_bench(config, out, resume=args.resume, overwrite=args.overwrite, progress=progress)
    except KeyboardInterrupt:
        progress.finish()
        if (out / "config.json").exists() and distributed.writes:
            stderr.print(f"finished images are saved in {escape(str(out))}; continue with --out {escape(str(out))} --resume")
        raise
    if not distributed.writes:  # under torchrun, process 0 reports for all
        return 0
    stdout.print(_table(result))
    skipped = len(result.summary["skipped"])
    stdout.print(
        f"wrote {escape(str(out))}/config.json, items.jsonl, summary.json in {time.perf_counter() - start:.1f} s"
        + (f"; {skipped} image(s) skipped, see items.jsonl" if skipped else "")
    )
    return 0


def _run_grid(args: argparse.Namespace) -> int:
    """Every combination of ``--grid`` values as its own resumable run under ``--out``, then one table of them all.

    Every run's settings are checked before anything is written; a grid refused before any run recorded
    its configuration takes its ``grid.json`` back. With ``--resume``, a finished run is kept as it is.
    """
    from xaikit.bench.grid import COMPARISON, check_runs, default_parent, describe, expand, finished_summary, parse_axis, read_grid_file, start_grid, undo_grid
    from xaikit.bench.rundir import CONFIG
    from xaikit.bench.runner import run_bench
    from xaikit.errors import XaikitError

    base = config_from(args)
    listed_axes, listed_runs = read_grid_file(args.grid_file) if args.grid_file else ([], [])
    axes = [parse_axis(text) for text in args.grid] + listed_axes
    runs = expand(base, axes, listed_runs)
    settings = describe(axes, listed_runs)
    check_runs(runs)
    distributed = Distributed.from_environment()
    parent = args.out or distributed.broadcast(default_parent(base, time.strftime("%Y%m%d-%H%M%S")))
    created, problem = [], None
    if distributed.writes:
        try:
            created = start_grid(parent, axes, [name for name, _ in runs], resume=args.resume, overwrite=args.overwrite)
        except XaikitError as error:
            problem = error
    problem = distributed.broadcast(problem)  # the other processes stop too, instead of waiting for process 0
    if problem is not None:
        raise problem
    table = Table(title=f"{escape(str(parent))}: {len(runs)} {_plural(len(runs), 'run')}")
    table.add_column("run")
    table.add_column("settings")
    for metric in base.metrics:
        table.add_column(f"{metric} (95% interval)", justify="right")
    table.add_column("details")
    progress = _progress(distributed)
    for number, ((name, config), setting) in enumerate(zip(runs, settings, strict=True), start=1):
        summary = distributed.broadcast(finished_summary(parent / name, config) if args.resume and distributed.writes else None)
        if summary is not None:
            progress.stage(f"run {number}/{len(runs)}: {name} (finished, kept)")
        else:
            progress.stage(f"run {number}/{len(runs)}: {name}")
            try:
                with log_to(parent / name):
                    summary = run_bench(config, parent / name, resume=args.resume, overwrite=args.overwrite, progress=progress).summary
            except KeyboardInterrupt:
                progress.finish()
                stderr.print(f"finished runs are saved in {escape(str(parent))}; continue with the same command and --resume")
                raise
            except XaikitError:
                if created and not any((parent / other / CONFIG).exists() for other, _ in runs):
                    undo_grid(created)  # nothing of this grid was recorded: the corrected command starts afresh
                raise
        entries = [summary["metrics"][metric] for metric in base.metrics]
        details = [(metric, _details(entry.get("details") or {})) for metric, entry in zip(base.metrics, entries, strict=True)]
        shown = details[0][1] if len(details) == 1 else "; ".join(f"{metric}: {text}" for metric, text in details if text)
        table.add_row(escape(name), escape(setting), *(_value_with_interval(entry) for entry in entries), escape(shown))
    if not distributed.writes:  # under torchrun, process 0 reports for all
        return 0
    stdout.print(table)
    compared = ""
    if len(runs) > 1:
        from xaikit.cli.compare import report
        from xaikit.errors import MissingDependencyError

        try:
            report([parent / name for name, _ in runs], parent / COMPARISON, resamples=base.bootstrap, seed=base.seed, show=False)
            compared = f" and their comparison (paired tests, per-class accuracy, plots) in {escape(str(parent / COMPARISON))}/comparison.html"
        except MissingDependencyError as error:  # the runs are done; only the report needs the plot extra
            compared = f"; no comparison report: {escape(str(error))}"
    stdout.print(f"wrote {len(runs)} {_plural(len(runs), 'run')} and grid.json under {escape(str(parent))}{compared}")
    return 0


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _interval(entry: dict) -> str:
    """A summary entry's 95 % interval as ``96.00 – 99.51``, or ``""`` when it has none."""
    interval = entry.get("interval") or {}
    return f"{interval['low']:.2f} – {interval['high']:.2f}" if interval.get("low") is not None else ""


def _details(details: dict) -> str:
    """A metric's details as the tables show them: its numbers, ``top1 98.00, top5 99.50``."""
    return ", ".join(f"{key} {value:.2f}" for key, value in details.items() if isinstance(value, float))


def _value_with_interval(entry: dict) -> str:
    """``98.00 (96.00 – 99.51)``, or the value alone, or ``—``."""
    if entry["value"] is None:
        return "—"
    interval = _interval(entry)
    return f"{entry['value']:.2f}" + (f" ({interval})" if interval else "")
