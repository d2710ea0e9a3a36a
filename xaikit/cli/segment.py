"""``xaikit segment``: segment one image into parts and save a colour overlay with a legend."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from xaikit.cli.console import add_debug, figure_file, make_parent, stdout


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``segment`` to the top-level subcommands."""
    segment = commands.add_parser(
        "segment",
        help="segment one image into parts and save a colour overlay",
        description="Segment IMAGE with a registered segmenter and write a PNG: the parts in colour over the "
        "image, and a legend naming each part found.",
    )
    segment.add_argument("image", metavar="IMAGE", type=Path, help="an image file")
    segment.add_argument("--segmenter", default="clipseg", help="registered segmenter (default clipseg)")
    segment.add_argument(
        "--vocabulary", metavar="NAMES", help='comma-separated part names for text-prompted segmenters, e.g. "bird head,bird beak"'
    )
    segment.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="segmenter option, repeatable: threshold=0.3, model=DIR, source=DIR, weights=FILE",
    )
    segment.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N, for segmenters that take one (default auto)")
    segment.add_argument("--out", type=figure_file, default=Path("overlay.png"), help="overlay to write: .png, .jpg or .pdf (default overlay.png)")
    add_debug(segment)
    segment.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the segmenter, segment the image and write the overlay."""
    import xaikit
    from xaikit.cli.options import parse_options
    from xaikit.cli.segment_figure import overlay
    from xaikit.data.cub import decode_image
    from xaikit.io import write_image_atomically
    from xaikit.types import Sample

    options = parse_options(args.option)
    if args.vocabulary is not None:
        options["vocabulary"] = args.vocabulary
    sample = Sample(image=decode_image(args.image, exif_transpose=True), path=args.image)
    segmenter = xaikit.get_registry().build("segmenter", args.segmenter, offer={"device": args.device}, **options)
    (part_map,) = segmenter.segment([sample])
    make_parent(args.out)
    write_image_atomically(args.out, overlay(sample.image, part_map))
    names = [part_map.names.get(label, f"label {label}") for label in part_map.present().tolist()]
    found = f"{len(names)} part(s): {', '.join(names)}" if names else "no parts found"
    stdout.print(f"{escape(found)}; wrote {escape(str(args.out))}")
    return 0
