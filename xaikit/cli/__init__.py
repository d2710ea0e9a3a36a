"""The ``xaikit`` command line: ``plugins``, ``list``, ``info``, ``data``, ``features``, ``bench``, ``explain``, ``segment``, ``doctor``, ``train``.

Every command has ``--help``. Errors are one sentence on standard error and a non-zero exit code
(2 for anything xaikit refuses, 1 for an unexpected internal error); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from xaikit.cli import bench, compare, data, doctor, explain, features, plugins, segment, train
from xaikit.cli.console import ArgumentParser, print_error
from xaikit.errors import XaikitError
from xaikit.quiet import configure as configure_output

__all__ = ["build_parser", "main"]


def build_parser() -> ArgumentParser:
    """The top-level parser with every subcommand attached."""
    parser = ArgumentParser(
        prog="xaikit",
        description="Explain vision-transformer image classifiers through semantic parts.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors, and third-party output as it happens")
    parser.add_argument("--version", action="version", version=f"xaikit {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    plugins.add_commands(commands)
    data.add_commands(commands)
    features.add_commands(commands)
    bench.add_commands(commands)
    explain.add_commands(commands)
    segment.add_commands(commands)
    doctor.add_commands(commands)
    train.add_commands(commands)
    compare.add_commands(commands)
    return parser


def _version() -> str:
    from xaikit import __version__

    return __version__


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """Report an error in one line (after the traceback with ``--debug``) and return its exit code."""
    if args.debug:
        traceback.print_exc()
    print_error(message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_output(verbose=args.debug)  # else third-party output goes to a log (xaikit.quiet)
    try:
        return int(args.handler(args) or 0)
    except XaikitError as error:
        return _fail(args, str(error), error.exit_code)
    except OSError as error:  # the file system refused: a missing, unreadable or unwritable path
        return _fail(args, f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error), 2)
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence: one sentence, not a dump
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        return _fail(args, f"internal error: {type(error).__name__}: {error}{hint}", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
