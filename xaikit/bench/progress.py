"""Progress events of a benchmark run (no heavy imports: the command line subclasses it at import time)."""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """Receives progress events; the default ignores them (the CLI shows a bar or plain lines)."""

    def stage(self, message: str) -> None:
        """A step begins (building components, fitting, scoring)."""

    def start(self, total: int, done: int) -> None:
        """Explaining begins: ``total`` images, ``done`` of them already finished (resumed)."""

    def advance(self, count: int) -> None:
        """``count`` more images are finished."""

    def scored(self, count: int) -> None:
        """While a metric scores (after :meth:`stage` named it): ``count`` more images went through the explainer.

        There is no total: a metric may send each image more than once (stability: clean and noisy).
        """

    def finish(self) -> None:
        """Explaining (or scoring) is over."""
