"""Console output shared by every command: rich consoles, one-line errors, the argument parser."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

# A pipe gets 200 columns (or $COLUMNS), not rich's 80, so that results tables are not squeezed.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """Print ``error: <message>`` on one line of standard error."""
    stderr.print(f"[bold red]error:[/] {escape(message)}")


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print_error(f"{self.prog}: {message} (see '{self.prog} --help')")
        sys.exit(2)


def make_parent(path: Path) -> None:
    """Create the folder ``path`` will be written to, saying so when it did not exist (a typo shows at once)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
        stderr.print(f"[dim]created the folder {escape(str(path.parent))}[/]")


def figure_file(text: str) -> Path:
    """An ``argparse`` type: a figure's path, ending in a suffix :func:`xaikit.io.write_image_atomically` writes (else exit 2)."""
    from xaikit.io import IMAGE_FORMATS

    path = Path(text)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} does not end in {', '.join(IMAGE_FORMATS)} (the figure's format)")
    return path


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_debug(parser: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after a subcommand too, without overriding one given before it."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
