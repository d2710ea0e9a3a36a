"""``xaikit doctor SEGMENTER``: check a user-installed segmenter's environment piece by piece, without building it.

For ``vlpart``, ``san`` and ``ov-parts``, whose code the user installs (detectron2, a source
checkout, a checkpoint, the packages the research code imports), it prints one line per piece:
``ok`` with what was found, ``missing`` with a one-line hint, or ``skipped`` where a piece cannot
be checked before another is fixed. The exit code is 0 when every piece is ok, 2 otherwise. The
pieces come from each adapter's ``SETUP`` (:class:`~xaikit_segmenters.external.Setup`), and the
checks call the adapter's own helpers, so doctor and adapter agree on what counts as found.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from xaikit.cli.console import add_debug, stdout
from xaikit.errors import XaikitError
from xaikit.quiet import captured

if TYPE_CHECKING:
    from xaikit_segmenters.external import Setup

__all__ = ["SEGMENTERS", "Piece", "add_commands", "diagnose"]

SEGMENTERS = {
    "vlpart": "xaikit_segmenters.vlpart:VLPartSegmenter",
    "san": "xaikit_segmenters.san:SANSegmenter",
    "ov-parts": "xaikit_segmenters.ov_parts:OVPartsSegmenter",
}
"""The segmenters doctor checks: their adapter classes, whose modules define ``SETUP``."""
_DETECTRON2 = "build detectron2 from source with pip install --no-build-isolation (docs/segmenters.md#vlpart, step 2)"
_STYLE = {"ok": "green", "missing": "bold red", "skipped": "yellow"}


@dataclass(frozen=True)
class Piece:
    """One checked piece of a segmenter's environment.

    Attributes:
        name: what was checked (``"detectron2"``, ``"source"``, ``"module clip"`` ...).
        status: ``"ok"``, ``"missing"`` or ``"skipped"`` (cannot be checked until another piece is fixed).
        detail: what was found, or one sentence on what to install or pass.
    """

    name: str
    status: str
    detail: str


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Attach ``doctor`` to the top-level subcommands."""
    doctor = commands.add_parser(
        "doctor",
        help="check a user-installed segmenter's setup piece by piece (vlpart, san, ov-parts)",
        description="Check what SEGMENTER needs, without building it: detectron2 with its C++ operators, the "
        "source checkout, the config, the classifier files, the checkpoint (readable without unpickling) and "
        "every package the research code imports. One line per piece; exit code 0 when all are ok, 2 otherwise.",
    )
    doctor.add_argument("segmenter", metavar="SEGMENTER", help=f"one of {', '.join(SEGMENTERS)}")
    doctor.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="the segmenter's options, as for xaikit segment: source=DIR, config=FILE, weights=FILE, trust_pickle=true",
    )
    add_debug(doctor)
    doctor.set_defaults(handler=run)


def _import(module: str, install: str) -> Piece:
    """Whether ``module`` imports (a real import: ``clip`` fails only then, without ``pkg_resources``)."""
    try:
        with captured(f"doctor: import {module}"):
            imported = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any failure while importing third-party code means 'not usable'
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return Piece(f"module {module}", "missing", f"import {module} fails ({reason}); {install}")
    return Piece(f"module {module}", "ok", str(Path(imported.__file__).parent) if getattr(imported, "__file__", None) else module)


def _detectron2() -> Piece:
    """detectron2 and its compiled operators (``detectron2._C``)."""
    found = _import("detectron2._C", _DETECTRON2)
    if found.status == "ok":
        return Piece("detectron2", "ok", f"{Path(found.detail).parent} (with its C++ operators)")
    return Piece("detectron2", "missing", found.detail)


def _merged_config(config: Path) -> dict[str, Any]:
    """``config`` read as YAML over its ``_BASE_`` chain, the later file winning key by key, as detectron2 merges them."""
    import yaml

    node = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    base = node.pop("_BASE_", None) if isinstance(node, dict) else None
    merged = _merged_config((config.parent / base).resolve()) if isinstance(base, str) else {}

    def merge(into: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        for key, value in over.items():
            into[key] = merge(into[key], value) if isinstance(value, dict) and isinstance(into.get(key), dict) else value
        return into

    return merge(merged, node) if isinstance(node, dict) else merged


def _config_files(config: Path) -> list[str]:
    """The ``datasets/...`` files that ``config`` (over its ``_BASE_`` chain) names: VLPart's classifiers."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    return [value for value in strings(_merged_config(config)) if value.startswith("datasets/")]


def _weights(setup: Setup, weights: str | None, trust_pickle: bool) -> Piece:
    """The checkpoint exists and ``torch.load(weights_only=True)`` reads it, as the adapter will."""
    from xaikit_segmenters.external import UnsafeCheckpointError, checkpoint, read_weights

    try:
        path = checkpoint(weights, setup.segmenter, setup.download)
        tensors = read_weights(path, setup.segmenter)
    except UnsafeCheckpointError:
        if trust_pickle:
            return Piece("weights", "ok", f"{path} (a pickle: trust_pickle=true lets detectron2 unpickle it)")
        return Piece("weights", "missing", f"{path} needs trust_pickle=true: it can only be read by unpickling, which could run code")
    except XaikitError as error:
        return Piece("weights", "missing", str(error))
    return Piece("weights", "ok", f"{path} ({len(tensors)} tensors, read without unpickling)")


def diagnose(segmenter: str, options: dict[str, Any]) -> list[Piece]:
    """Check every piece ``segmenter`` needs, given its options (``source``, ``config``, ``weights``, ``trust_pickle``).

    Nothing is built: modules are imported, files are found and the checkpoint is read.

    Raises:
        XaikitError: ``segmenter`` is not one doctor checks, or an option it does not take.
    """
    from xaikit.options import coerce_options
    from xaikit_segmenters.external import config_file, source_root

    if segmenter not in SEGMENTERS:
        raise XaikitError(
            f"xaikit doctor checks the segmenters whose code you install ({', '.join(SEGMENTERS)}), not '{segmenter}'; "
            "xaikit plugins shows whether the others are available"
        )
    module, _, name = SEGMENTERS[segmenter].partition(":")
    adapter = importlib.import_module(module)
    factory = getattr(adapter, name)
    unknown = sorted(set(options) - set(inspect.signature(factory).parameters))
    if unknown:
        raise XaikitError(f"segmenter '{segmenter}' has no option '{unknown[0]}'; see xaikit info segmenter {segmenter}")
    options = coerce_options(f"segmenter '{segmenter}'", factory, options)
    setup = adapter.SETUP
    pieces = [_detectron2()]
    if setup.cuda:
        import torch

        cuda = torch.cuda.is_available()
        pieces.append(Piece("CUDA", "ok" if cuda else "missing", torch.cuda.get_device_name() if cuda else f"{segmenter} runs only on CUDA"))
    try:
        root = source_root(options.get("source"), setup.package, setup.segmenter, setup.clone)
        pieces.append(Piece("source", "ok", str(root)))
    except XaikitError as error:
        root = None
        pieces.append(Piece("source", "missing", f"{error} (--option source=DIR)"))
    config = None
    if root is None:
        pieces.append(Piece("config", "skipped", "needs the source checkout"))
    else:
        try:
            config = config_file(options.get("config", setup.config), root, setup.segmenter)
            pieces.append(Piece("config", "ok", str(config)))
        except XaikitError as error:
            pieces.append(Piece("config", "missing", str(error)))
    if root is not None:
        named = [*setup.files, *(_config_files(config) if config is not None else [])]
        for relative in dict.fromkeys(named):
            found = (root / relative).is_file()
            pieces.append(Piece(relative, "ok" if found else "missing", str(root / relative) if found else f"not in {root}; is the checkout complete?"))
    pieces.append(_weights(setup, options.get("weights"), bool(options.get("trust_pickle", False))))
    pieces += [_import(module_name, install) for module_name, install in setup.modules]
    return pieces


def run(args: argparse.Namespace) -> int:
    """Print one line per piece and a verdict; 0 when every piece is ok, 2 otherwise."""
    from xaikit.cli.options import parse_options

    pieces = diagnose(args.segmenter, parse_options(args.option))
    width = max(len(piece.name) for piece in pieces)
    for piece in pieces:
        stdout.print(f"[{_STYLE[piece.status]}]{piece.status:<7}[/] {escape(piece.name.ljust(width))}  {escape(piece.detail)}")
    problems = sum(piece.status != "ok" for piece in pieces)
    if problems:
        stdout.print(f"{args.segmenter}: {problems} of {len(pieces)} pieces are not ready")
        return 2
    stdout.print(f"{args.segmenter}: ready ({len(pieces)} pieces ok)")
    return 0
