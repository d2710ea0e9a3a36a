"""``xaikit data synth`` and ``xaikit data check``: make and verify datasets in the CUB layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress

from xaikit.cli.console import add_debug, positive_int, stderr, stdout


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``data synth`` and ``data check`` to the top-level subcommands."""
    data = commands.add_parser("data", help="make and check datasets", description="Make and check datasets.")
    add_debug(data)
    actions = data.add_subparsers(title="data commands", metavar="COMMAND", required=True)

    synth = actions.add_parser(
        "synth",
        help="write the synthetic-birds dataset",
        description="Write synthetic birds with known parts in the CUB-200-2011 layout, plus part masks. "
        "The same options always give the same bytes.",
    )
    synth.add_argument("--out", required=True, type=Path, help="directory to write (must not exist or be empty)")
    synth.add_argument("--classes", type=positive_int, default=10, help="number of species (default 10)")
    synth.add_argument("--per-class", type=positive_int, default=40, help="images per species (default 40)")
    synth.add_argument("--size", type=positive_int, default=224, help="image side in pixels (default 224)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_debug(synth)
    synth.set_defaults(handler=run_synth)

    check = actions.add_parser(
        "check",
        help="validate a dataset in the CUB layout",
        description="Parse every annotation file of a CUB-layout dataset, check that each image exists "
        "and, with --decode, that each image decodes; report the first problem with its file and line.",
    )
    check.add_argument("root", type=Path, metavar="ROOT", help="the directory holding images.txt")
    check.add_argument("--decode", action="store_true", help="also decode every image and mask")
    add_debug(check)
    check.set_defaults(handler=run_check)


def run_synth(args: argparse.Namespace) -> int:
    """Write synthetic-birds to ``--out`` and summarise it."""
    from xaikit.data.cub import CUBDataset
    from xaikit.data.synthetic import SynthConfig, write_synthetic_birds

    config = SynthConfig(classes=args.classes, per_class=args.per_class, size=args.size, seed=args.seed)
    start = time.perf_counter()
    with stderr.status(f"writing {config.classes * config.per_class} synthetic birds to {escape(str(args.out))}"):
        root = write_synthetic_birds(args.out, config, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    dataset = CUBDataset(root)
    train = len(dataset.split("train"))
    stdout.print(
        f"wrote {len(dataset)} images of {len(dataset.classes)} species ({train} train, "
        f"{len(dataset) - train} test) to {escape(str(root))} in {seconds:.1f} s"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Load a CUB-layout dataset (optionally decoding everything) and summarise it."""
    from xaikit.data.cub import CUBDataset

    dataset = CUBDataset(args.root)
    if args.decode:
        with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
            for _ in progress.track(dataset, total=len(dataset), description="decoding"):
                pass
    train = len(dataset.split("train"))
    parts = len(dataset.part_names)
    stdout.print(
        f"{escape(str(dataset.root))}: {len(dataset)} images ({train} train, {len(dataset) - train} test), "
        f"{len(dataset.classes)} classes, {parts} parts" + (", every image decodes" if args.decode else "")
    )
    return 0
