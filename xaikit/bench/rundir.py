"""A benchmark run's directory: ``config.json``, ``items.jsonl`` and ``summary.json``, crash-safe.

``config.json`` and ``summary.json`` are written atomically. ``items.jsonl`` grows by whole
batches of lines, each batch flushed and fsynced before the next one is computed; a run killed
while writing leaves at most one partial last line, which :meth:`RunDirectory.open` drops on resume.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xaikit.errors import XaikitError
from xaikit.io import write_json_atomically

__all__ = ["CONFIG", "ITEMS", "SUMMARY", "RunDirectory"]

CONFIG = "config.json"
ITEMS = "items.jsonl"
SUMMARY = "summary.json"


class RunDirectory:
    """The files of one run.

    Attributes:
        path: the run directory.
        items: finished records read back on resume (or written so far), keyed by ``index``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.items: dict[int, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool, overwrite: bool, same: Iterable[str]) -> RunDirectory:
        """Create, resume or replace the run at ``path``.

        Args:
            config: this run's configuration, written to ``config.json``.
            resume: continue a run found at ``path``; its ``config.json`` must agree on the keys ``same``.
            overwrite: delete whatever run is at ``path`` first.
            same: the configuration keys that decide results.

        Raises:
            XaikitError: ``path`` holds a run and neither flag is given, or its configuration differs
                on a key of ``same``, or ``path`` is a file.
        """
        run = cls(Path(path))
        started = cls.check_free(run.path, resume=resume, overwrite=overwrite)
        if started and overwrite:
            shutil.rmtree(run.path)
            started = False
        run.path.mkdir(parents=True, exist_ok=True)
        if started:
            run._check_config(config, same)
            run.items = run._read_items()
        else:
            write_json_atomically(run.path / CONFIG, dict(config))
        return run

    @staticmethod
    def check_free(path: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> bool:
        """Whether ``path`` already holds a run, refusing it unless ``resume`` or ``overwrite`` is given.

        Raises:
            XaikitError: ``path`` is a file, or holds a run and neither flag is given.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise XaikitError(f"run directory {path} is a file")
        started = path.is_dir() and any(path.iterdir())
        if started and not (resume or overwrite):
            raise XaikitError(f"run directory {path} already holds a run; pass --resume to continue it or --overwrite to replace it")
        return started

    def _check_config(self, config: Mapping[str, Any], same: Iterable[str]) -> None:
        try:
            previous = json.loads((self.path / CONFIG).read_text())
        except (OSError, ValueError) as error:
            raise XaikitError(f"cannot resume {self.path}: {CONFIG} is missing or unreadable ({error})") from error
        for key in same:
            if previous.get(key) != config.get(key):
                raise XaikitError(
                    f"cannot resume {self.path}: it was started with {key} = {json.dumps(previous.get(key))}, "
                    f"not {json.dumps(config.get(key))}; use another --out or --overwrite"
                )

    def _read_items(self) -> dict[int, dict[str, Any]]:
        """Records of ``items.jsonl``; a torn last line (from a kill) is cut off the file."""
        path = self.path / ITEMS
        if not path.exists():
            return {}
        items: dict[int, dict[str, Any]] = {}
        good = 0
        with path.open("rb") as file:
            for line in file:
                try:
                    record = json.loads(line)
                    if not line.endswith(b"\n"):
                        raise ValueError("unterminated line")
                except ValueError:
                    break
                items[int(record["index"])] = record
                good += len(line)
        if good != path.stat().st_size:
            os.truncate(path, good)
        return items

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add finished records to ``items.jsonl`` durably (flushed and fsynced)."""
        if not records:
            return
        data = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode()
        with (self.path / ITEMS).open("ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self.items.update((int(record["index"]), record) for record in records)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        write_json_atomically(self.path / SUMMARY, dict(summary))
