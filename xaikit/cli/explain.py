"""``xaikit explain``: explain one image and draw the explanation (for KLC, the paper's Figure 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape

from xaikit.cli.bench import add_component_arguments, config_from
from xaikit.cli.console import add_debug, make_parent, stderr, stdout


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``explain`` to the top-level subcommands."""
    explain = commands.add_parser(
        "explain",
        help="explain one image and save the figure",
        description="Fit the explainer on the dataset's training split, explain IMAGE and save its figure: "
        "the query beside its prototypes, matched parts joined and labelled.",
    )
    explain.add_argument("image", metavar="IMAGE", help="an image file, or the image id of a dataset image (to use its annotations)")
    add_component_arguments(explain)
    explain.add_argument("--out", type=Path, default=Path("explanation.png"), help="PNG to write (default explanation.png)")
    explain.add_argument("--json", action="store_true", help="also print the explanation's details as JSON")
    add_debug(explain)
    explain.set_defaults(handler=run)


def _query(image: str, dataset):
    """The sample to explain: a decoded file, or the dataset image with that id."""
    import numpy as np

    from xaikit.data.cub import decode_image
    from xaikit.errors import XaikitError
    from xaikit.types import Sample

    path = Path(image)
    if path.exists() or not image.isdigit():
        return Sample(image=decode_image(path, exif_transpose=True), path=path)
    image_ids = getattr(dataset, "image_ids", None)
    if image_ids is None:
        raise XaikitError(f"dataset {type(dataset).__name__} has no image ids; pass an image file instead of {image}")
    matches = np.flatnonzero(np.asarray(image_ids) == int(image))
    if not len(matches):
        raise XaikitError(f"no file named {image} and no image with id {image} in the dataset")
    return dataset[int(matches[0])]


def run(args: argparse.Namespace) -> int:
    """Build the components, fit, explain the image and write the figure."""
    import xaikit
    from xaikit.bench.runner import build_run
    from xaikit.io import write_png_atomically

    run = build_run(config_from(args), xaikit.get_registry())
    query = _query(args.image, run.train.split("all"))
    stderr.print(f"[dim]fitting {escape(args.explainer)} on {len(run.train)} training images[/]")
    run.explainer.fit(run.train)
    explanation = run.explainer.explain([query])
    detail = explanation.details[0]
    figure = run.explainer.render(query, detail)
    make_parent(args.out)
    write_png_atomically(args.out, figure)
    prediction = int(explanation.predictions[0])
    name = run.train.classes[prediction] if 0 <= prediction < len(run.train.classes) else str(prediction)
    if args.json:
        stdout.print_json(json.dumps(detail))
    stdout.print(f"predicted {escape(name)}; wrote {escape(str(args.out))}")
    return 0
