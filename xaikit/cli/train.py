"""``xaikit train``: train an explainer that learns (IVPT), checkpoint it every epoch, evaluate it on the test split.

The run directory holds ``config.json`` (the resolved configuration and versions), the explainer's
checkpoint (for IVPT ``checkpoint.safetensors``) and, at the end, ``metrics.json`` with the test
accuracy. ``--resume`` continues from the last checkpoint; ``xaikit bench --explainer ivpt --option
checkpoint=DIR`` evaluates the result with any metric. Under ``torchrun --nproc_per_node N -m xaikit
train ...`` every process runs this command; rank 0 writes and reports.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from xaikit.bench.config import BenchConfig, environment, split_options
from xaikit.cli.bench import add_component_arguments
from xaikit.cli.console import add_debug, positive_int, stderr, stdout
from xaikit.cli.options import parse_options
from xaikit.errors import UnknownOptionError, XaikitError
from xaikit.distributed import Distributed
from xaikit.training import TrainProgress

METRICS = "metrics.json"
"""The test-split evaluation written at the end of training."""
_PRESET_KINDS = ("dataset", "backbone", "explainer")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``train`` to the top-level subcommands."""
    train = commands.add_parser(
        "train",
        help="train an explainer (ivpt), checkpointing every epoch, then evaluate it",
        description="Train an explainer on a dataset's training split, write a checkpoint to --out after every "
        "epoch, and report its top-1 accuracy on the test split. Continue an interrupted run with --resume; "
        "evaluate the result with: xaikit bench --explainer ivpt --option checkpoint=OUT. Data-parallel: "
        "torchrun --nproc_per_node N -m xaikit train ...",
    )
    add_component_arguments(train, explainer="ivpt", parts=False)
    train.add_argument("--epochs", type=positive_int, help="training epochs, at least 1 (default: the explainer's or the preset's)")
    train.add_argument("--batch-size", type=positive_int, help="images per optimiser step over all processes (the explainer's train_batch_size)")
    train.add_argument("--seed", type=int, help="training seed (default: the explainer's)")
    train.add_argument("--preset", help="a named recipe of the explainer, e.g. reference (ivpt: the paper's 518 px DINOv2-B run)")
    train.add_argument("--out", type=Path, required=True, help="run directory for config.json, the checkpoint and metrics.json")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    add_debug(train)
    train.set_defaults(handler=run)


class _Bar(TrainProgress):
    """A rich bar over each epoch's steps (count, elapsed, ETA, latest total loss); each epoch's mean terms as a line."""

    def __init__(self) -> None:
        # Count, ETA and the total loss fit in 80 columns; every loss term is printed once per epoch instead.
        self.bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]}"), console=stderr, transient=True,
        )
        self.task = None
        self.epochs = self.steps = 0

    def start(self, epochs: int, steps: int, first_epoch: int) -> None:
        self.epochs, self.steps = epochs, steps
        self.bar.start()
        self.task = self.bar.add_task(f"epoch {first_epoch + 1}/{epochs}", total=steps, loss="-")

    def step(self, terms: Mapping[str, float]) -> None:
        self.bar.update(self.task, advance=1, loss=f"{terms.get('total', float('nan')):.3f}")

    def epoch(self, epoch: int, means: Mapping[str, float]) -> None:
        self.bar.console.print(f"epoch {epoch + 1}/{self.epochs}: {_terms(means)}")
        if epoch + 1 < self.epochs:  # the bar counts the steps of one epoch, so its ETA is the epoch's
            self.bar.reset(self.task, total=self.steps, description=f"epoch {epoch + 2}/{self.epochs}", loss="-")

    def finish(self) -> None:
        self.bar.stop()


class _Lines(TrainProgress):
    """One plain line per epoch, for logs."""

    def __init__(self) -> None:
        self.epochs = 0

    def start(self, epochs: int, steps: int, first_epoch: int) -> None:
        self.epochs = epochs
        print(f"training epochs {first_epoch + 1}-{epochs}, {steps} steps each", file=stderr.file, flush=True)

    def epoch(self, epoch: int, means: Mapping[str, float]) -> None:
        print(f"epoch {epoch + 1}/{self.epochs}: {_terms(means)}", file=stderr.file, flush=True)


def _terms(terms: Mapping[str, float]) -> str:
    ordered = sorted(terms, key=lambda name: (name != "total", name))
    return " ".join(f"{name} {terms[name]:.3f}" for name in ordered if name != "epoch")


def train_config(args: argparse.Namespace, registry: Any) -> BenchConfig:
    """The components to build: the preset's values, overridden by the flags and ``--option``s.

    Raises:
        XaikitError: an unknown preset, or a flag the explainer does not take.
    """
    options = split_options(parse_options(args.option), [])
    backbone = args.backbone
    if args.preset is not None:
        presets = getattr(registry.factory("explainer", args.explainer), "presets", {}) or {}
        if args.preset not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise XaikitError(f"explainer '{args.explainer}' has no preset '{args.preset}' (presets: {known})")
        preset = presets[args.preset]
        backbone = backbone or preset.get("backbone")
        for kind in _PRESET_KINDS:
            options[kind] = {**preset.get("options", {}).get(kind, {}), **options.get(kind, {})}
    for flag, key in (("epochs", "epochs"), ("batch_size", "train_batch_size"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is None:
            continue
        if not registry.accepts("explainer", args.explainer, key):
            raise UnknownOptionError(f"explainer '{args.explainer}' takes no {key} (from --{flag.replace('_', '-')})")
        options.setdefault("explainer", {})[key] = value
    if "explainer" in options:  # typed now, so that a preset's values and the flags compare as numbers
        options["explainer"] = registry.coerce("explainer", args.explainer, options["explainer"])
    if options.get("explainer", {}).get("epochs", 1) < 1:
        raise XaikitError(
            f"xaikit train needs at least 1 epoch, got epochs={options['explainer']['epochs']}; to evaluate an untrained "
            f"{args.explainer}, run: xaikit bench --explainer {args.explainer} --option epochs=0"
        )
    return BenchConfig(
        dataset=args.dataset, data_root=None if args.data_root is None else os.path.expanduser(args.data_root), backbone=backbone,
        explainer=args.explainer, metrics=[],
        device=args.device, options={kind: value for kind, value in options.items() if value},
    )


def _record(config: BenchConfig, run: Any, preset: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` for the run, and the same without ``epochs`` and the device (what must match to resume)."""
    from xaikit.backbones.device import resolve_device

    components = {kind: dict(value) for kind, value in run.components.items()}
    explainer = dict(components["explainer"])
    options = dict(explainer.get("options", {}))
    epochs = options.pop("epochs", None)
    options.pop("device", None)  # where it runs does not change what it learns
    components["explainer"] = {**explainer, "options": options}
    fixed = {"dataset": config.dataset, "data_root": config.data_root, "components": components}
    device = {"device": str(resolve_device(config.device)), "device_requested": config.device}
    return {**fixed, "preset": preset, "epochs": epochs, **device, "versions": {**environment(), "plugins": run.plugins}}, fixed


def run(args: argparse.Namespace) -> int:
    """Build, train with checkpoints, evaluate on the test split, write ``metrics.json``."""
    import xaikit
    from xaikit.bench.rundir import RunDirectory

    registry = xaikit.get_registry()
    distributed = Distributed.from_environment()
    args.device = distributed.select_device(args.device)
    config = train_config(args, registry)
    owned = (METRICS, *getattr(registry.factory("explainer", config.explainer), "run_files", ()))
    directory = RunDirectory.claim(args.out, resume=args.resume, overwrite=args.overwrite, owned=owned) if distributed.writes else None
    with directory or contextlib.nullcontext():
        return _train(args, registry, config, distributed, directory)


def _train(args: argparse.Namespace, registry: Any, config: BenchConfig, distributed: Distributed, directory: Any) -> int:
    """Build, train and evaluate, with ``directory`` claimed on the writing process (``None`` on the others)."""
    from xaikit.bench.runner import build_run
    from xaikit.io import write_json_atomically
    from xaikit.training import Trainable

    built = build_run(config, registry)
    if not isinstance(built.explainer, Trainable):
        raise XaikitError(f"explainer '{config.explainer}' is not trained (it has nothing to learn); xaikit train needs one such as ivpt")
    record, fixed = _record(config, built, args.preset)
    if directory is not None:
        directory.start(record, same=fixed.keys())
        directory.record()
        write_json_atomically(directory.path / "config.json", record)  # epochs may grow on resume: the latest
    distributed.barrier()
    progress = (_Bar() if stderr.is_terminal else _Lines()) if distributed.writes else TrainProgress()
    start = time.perf_counter()
    try:
        history = built.explainer.train(built.train, args.out, resume=args.resume, progress=progress, record=built.components)
    except KeyboardInterrupt:
        progress.finish()
        if distributed.writes:
            stderr.print(f"the last finished epoch is saved in {escape(str(args.out))}; continue with --out {escape(str(args.out))} --resume")
        raise
    seconds = time.perf_counter() - start
    if distributed.writes:
        stderr.print(f"[dim]evaluating on {len(built.test)} test images[/]")
        accuracy = registry.create("metric", "accuracy")(built.explainer, built.test)
        last = None if not history else {**_rounded(history[-1]), "epoch": int(history[-1]["epoch"]) + 1}  # epochs count from 1, as printed
        metrics = {"accuracy": _rounded(accuracy.details), "train_seconds": round(seconds, 1), "last_epoch": last, "processes": distributed.world}
        write_json_atomically(Path(args.out) / METRICS, metrics)
        stdout.print(_table(args.out, history, accuracy.details))
    distributed.barrier()
    return 0


def _rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with floats rounded to 6 decimals (``95.2``, not ``95.19999999999999``)."""
    return {key: round(value, 6) if isinstance(value, float) else value for key, value in values.items()}


def _table(out: Path, history: list[dict[str, float]], accuracy: Mapping[str, Any]) -> Table:
    table = Table(title=f"{escape(str(out))}: top-1 {accuracy['top1']:.2f} % on {accuracy['images']} test images")
    table.add_column("epoch", justify="right")
    table.add_column("loss terms (means)")
    for entry in history[-5:]:
        table.add_row(str(int(entry["epoch"]) + 1), _terms(entry))
    return table
