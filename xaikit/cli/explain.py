"""``xaikit explain``: explain one image and draw the explanation (for KLC, the query beside each prototype).

``IMAGE`` is a dataset image id or an image file. A dataset image is drawn as the dataset gives it
(cropped to its box where the dataset crops), the same way as the training images it is compared
with. A file has no box, so the training images are then read whole too (``dataset.crop_to_bbox=false``
unless the option is given), and it has no part annotations, so a segmenter that reads them
(``annotations``) is refused with a pointer to one that reads pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from xaikit.cli.bench import add_component_arguments, config_from
from xaikit.cli.console import add_debug, figure_file, make_parent, stderr, stdout

PIXEL_SEGMENTER = "dino-parts"
"""The weight-free segmenter that reads pixels, suggested when an image file meets ``annotations``."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``explain`` to the top-level subcommands."""
    explain = commands.add_parser(
        "explain",
        help="explain one image and save the figure",
        description="Fit the explainer on the dataset's training split (or load its checkpoint), explain IMAGE "
        "and save its figure: for KLC, the query beside each prototype with matched parts joined and labelled; "
        "for IVPT, every layer's concept regions and the concepts' importance.",
    )
    explain.add_argument(
        "image", metavar="IMAGE",
        help="the image id of a dataset image (drawn as the dataset gives it, with its annotations), or an image "
        f"file (needs a segmenter that reads pixels, e.g. --segmenter {PIXEL_SEGMENTER}; the training images are then read whole)",
    )
    add_component_arguments(explain)
    explain.add_argument("--out", type=figure_file, default=Path("explanation.png"), help="figure to write: .png, .jpg or .pdf (default explanation.png)")
    explain.add_argument("--json", action="store_true", help="also print the explanation's details as JSON")
    add_debug(explain)
    explain.set_defaults(handler=run)


def _is_file(image: str) -> bool:
    """Whether ``IMAGE`` names a file rather than a dataset image id."""
    return Path(image).exists() or not image.isdigit()


def _file_query(image: str):
    """The decoded image file, as a sample without annotations."""
    from xaikit.data.cub import decode_image
    from xaikit.types import Sample

    path = Path(image)
    return Sample(image=decode_image(path, exif_transpose=True), path=path)


def _dataset_query(image: str, dataset):
    """The dataset image with id ``image``."""
    import numpy as np

    from xaikit.errors import XaikitError

    image_ids = getattr(dataset, "image_ids", None)
    if image_ids is None:
        raise XaikitError(f"dataset {type(dataset).__name__} has no image ids; pass an image file instead of {image}")
    matches = np.flatnonzero(np.asarray(image_ids) == int(image))
    if not len(matches):
        raise XaikitError(f"no file named {image} and no image with id {image} in the dataset")
    return dataset[int(matches[0])]


def _whole_images(config, registry):
    """``config`` reading the dataset's images whole, when its dataset crops and the user left that option alone."""
    dataset_options = config.options.get("dataset", {})
    if "crop_to_bbox" in dataset_options or not registry.accepts("dataset", config.dataset, "crop_to_bbox"):
        return config
    options = {**config.options, "dataset": {**dataset_options, "crop_to_bbox": False}}
    return dataclasses.replace(config, options=options)


def _refuse_annotation_segmenter(image: str, run: Any) -> None:
    """Refuse an image file when the explainer's segmenter reads dataset annotations instead of pixels."""
    from xaikit.errors import XaikitError

    segmenter = getattr(run.explainer, "segmenter", None)
    if getattr(segmenter, "needs_annotations", False):
        name = run.components.get("segmenter", {}).get("name", type(segmenter).__name__)
        raise XaikitError(
            f"{image} is an image file without part annotations, but the {name} segmenter needs an "
            f"annotated dataset image; pass a segmenter that reads pixels, e.g. --segmenter {PIXEL_SEGMENTER}, "
            "or a dataset image id"
        )


def run(args: argparse.Namespace) -> int:
    """Build the components, fit (or load), explain the image and write the figure."""
    import xaikit
    from xaikit.bench.runner import build_run
    from xaikit.io import write_image_atomically

    registry = xaikit.get_registry()
    config = config_from(args)
    is_file = _is_file(args.image)
    query = _file_query(args.image) if is_file else None
    whole = _whole_images(config, registry) if is_file else config
    run = build_run(whole, registry)
    if is_file:
        _refuse_annotation_segmenter(args.image, run)
        if whole is not config:
            stderr.print(f"[dim]{escape(args.image)} is a whole image file, so the training images are read whole too (dataset.crop_to_bbox=false)[/]")
        config = whole
    else:
        query = _dataset_query(args.image, run.train.split("all"))
    stderr.print(f"[dim]{escape(run.explainer.describe_fit(run.train, config.explainer))}[/]")
    run.explainer.fit(run.train)
    explanation = run.explainer.explain([query])
    detail = explanation.details[0]
    figure = run.explainer.render(query, detail)
    make_parent(args.out)
    write_image_atomically(args.out, figure)
    prediction = int(explanation.predictions[0])
    name = run.train.classes[prediction] if 0 <= prediction < len(run.train.classes) else str(prediction)
    if args.json:
        stdout.print_json(json.dumps(detail))
    stdout.print(f"predicted {escape(name)}; wrote {escape(str(args.out))}")
    return 0
