"""``xaikit features``: extract a dataset's backbone features into the on-disk cache."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape

from xaikit.cli.console import add_debug, positive_int, stderr, stdout
from xaikit.cli.options import parse_options


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``features`` to the top-level subcommands."""
    features = commands.add_parser(
        "features",
        help="extract and cache backbone features of a dataset",
        description="Extract the backbone features of every image of a dataset into the feature cache "
        "(e.g. on a GPU machine before long runs); a second run reads them back without the model. "
        "Under torchrun --nproc_per_node N -m xaikit features ..., the images are shared out between the N processes.",
    )
    features.add_argument("--backbone", default="demo-vit", help="registered backbone name (default demo-vit)")
    features.add_argument("--dataset", default="synthetic-birds", help="registered dataset name (default synthetic-birds)")
    features.add_argument("--data-root", type=Path, help="the dataset's root directory (required for cub)")
    features.add_argument("--split", default="all", choices=("all", "train", "test"), help="which split (default all)")
    features.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="backbone option, repeatable, e.g. resize=squash")
    features.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    features.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    features.add_argument("--workers", type=int, default=2, help="image-decoding processes, 0 to decode in this process (default 2)")
    features.add_argument("--cache-dir", type=Path, help="feature cache directory (default: the xaikit cache)")
    add_debug(features)
    features.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    """Build the backbone and dataset by name, extract every image's features, report shapes and time.

    Under ``torchrun`` process ``r`` of ``N`` extracts images ``r, r + N, ...`` into the shared cache;
    process 0 reports once all are done.
    """
    import xaikit
    from xaikit.data.subset import Subset
    from xaikit.distributed import Distributed
    from xaikit.features.cache import FeatureCache
    from xaikit.features.extract import extract_features

    distributed = Distributed.from_environment()
    distributed.select_device(args.device)
    dataset_options = {"split": args.split} | ({"root": args.data_root} if args.data_root else {})
    dataset = xaikit.create("dataset", args.dataset, **dataset_options)
    backbone = xaikit.create("backbone", args.backbone, device=args.device, **parse_options(args.option))
    start = time.perf_counter()
    features = extract_features(
        backbone, Subset(dataset, distributed.shard(len(dataset))) if distributed.active else dataset,
        batch_size=args.batch_size, num_workers=args.workers,
        cache=FeatureCache(args.cache_dir) if args.cache_dir else True, progress=stderr.is_terminal and distributed.writes,
    )
    distributed.barrier()
    seconds = time.perf_counter() - start
    if not distributed.writes:  # process 0 reports for all
        return 0
    stdout.print(
        f"{len(dataset)} images through {escape(backbone.name)} on {backbone.device}"
        + (f" and {distributed.world - 1} more processes" if distributed.active else "")
        + f" in {seconds:.1f} s "
        f"({len(dataset) / seconds:.1f} images/s): cls {(len(dataset), *features.cls.shape[1:])}, "
        f"patches {(len(dataset), *features.patches.shape[1:])}"
    )
    return 0
