"""Keep what third-party code prints out of the user's terminal, in a log file instead.

Research code prints as it builds and runs (VLPart dumps the modules it freezes, SAN prints its
vocabulary, detectron2 and fvcore log, torch and timm warn about deprecations). Adapters wrap
those calls in :func:`captured`: standard output and error, warnings and log records of level
WARNING and above go to :func:`log_path`, the run directory's ``third-party.log`` while
:func:`log_to` names one (``xaikit bench`` and ``xaikit explain`` do), else
``<cache>/logs/third-party.log``. With :func:`configure` ``(verbose=True)`` (the command line's
``--debug``) nothing is captured and everything reaches the terminal as it happens.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from xaikit.paths import cache_dir

__all__ = ["LOG_NAME", "captured", "configure", "log_path", "log_to"]

LOG_NAME = "third-party.log"
_settings: dict[str, object] = {"verbose": False, "directory": None}


def configure(*, verbose: bool) -> None:
    """Show third-party output on the terminal (``verbose``) instead of logging it."""
    _settings["verbose"] = verbose


@contextlib.contextmanager
def log_to(directory: Path) -> Iterator[None]:
    """Within the block, captured output goes to ``directory / "third-party.log"`` once ``directory`` exists."""
    previous = _settings["directory"]
    _settings["directory"] = Path(directory)
    try:
        yield
    finally:
        _settings["directory"] = previous


def log_path() -> Path:
    """Where captured output goes now: the :func:`log_to` directory if it exists, else the cache's ``logs/``."""
    directory = _settings["directory"]
    if isinstance(directory, Path) and directory.is_dir():
        return directory / LOG_NAME
    return cache_dir() / "logs" / LOG_NAME


def _terminal_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    """Every (logger, handler) pair whose handler writes to the process's standard output or error."""
    consoles = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
    loggers = [logging.getLogger(), *(item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger))]
    return [
        (logger, handler)
        for logger in loggers
        for handler in logger.handlers
        if id(getattr(handler, "stream", None)) in consoles
    ]


@contextlib.contextmanager
def captured(what: str, streams: bool = True) -> Iterator[None]:
    """Capture third-party output during the block and append it to :func:`log_path`, headed by ``what``.

    Args:
        what: a short description for the log (``"vlpart: build"``).
        streams: also redirect ``sys.stdout``/``sys.stderr``; leave it off around calls made
            while a progress bar may be drawing, and capture only warnings and logging there.
    """
    if _settings["verbose"]:
        yield
        return
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    terminal = _terminal_handlers()  # libraries' own console handlers (torch's, detectron2's) write here instead
    for logger, own in terminal:
        logger.removeHandler(own)
    loggers = {logger for logger, _ in terminal if not logger.propagate} | {logging.getLogger()}
    for logger in loggers:
        logger.addHandler(handler)
    redirect = contextlib.ExitStack()
    if streams:
        redirect.enter_context(contextlib.redirect_stdout(buffer))
        redirect.enter_context(contextlib.redirect_stderr(buffer))
    try:
        with warnings.catch_warnings(record=True) as caught, redirect:
            warnings.simplefilter("default")
            yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        for logger, own in terminal:
            logger.addHandler(own)
        lines = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip() for w in caught]
        text = "\n".join([buffer.getvalue().rstrip(), *lines]).strip()
        if text:
            path = log_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n{text}\n")
