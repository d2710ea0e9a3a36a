"""A run's directory: ``config.json``, ``items.jsonl`` and ``summary.json``, crash-safe, locked, never clobbering.

``config.json`` and ``summary.json`` are written atomically. ``items.jsonl`` grows by whole
batches of lines, each batch flushed and fsynced before the next one is computed; a run killed
while writing leaves at most one partial last line, which :meth:`RunDirectory.start` cuts off on resume.

Under ``torchrun``, process ``r > 0`` appends its records to its own shard ``items.<r>.jsonl``
(:func:`shard_path`, :func:`append_records`) while process 0 appends to ``items.jsonl``; at the end
process 0 merges the shards into ``items.jsonl`` in sample order (:meth:`RunDirectory.consolidate`),
so the file is the same whatever the number of processes. A resumed run reads the shards a killed
run left, whatever their number.

Safety rules (xaikit never deletes a file it did not create):

- A directory is an xaikit run when its ``config.json`` is one xaikit wrote (it records
  ``versions.xaikit``). ``overwrite`` deletes only the files a run writes (:attr:`RunDirectory.owned`),
  and refuses a directory that holds anything else, naming what it found.
- A directory that holds no run is used only when it is empty (or holds nothing but files a run writes).
- ``resume`` and ``overwrite`` together are refused.
- An OS file lock (``flock`` on ``.xaikit.lock``, removed again by :meth:`RunDirectory.release`) is
  held from :meth:`RunDirectory.claim` to :meth:`RunDirectory.release`; a second process claiming the
  same directory is refused at once. The kernel drops the lock when the process dies, so a killed run
  can be resumed (its stale lock file is simply locked again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from xaikit.errors import XaikitError
from xaikit.io import write_bytes_atomically, write_json_atomically
from xaikit.quiet import LOG_NAME

__all__ = ["CONFIG", "ITEMS", "LOCK", "LOG", "SHARD", "SUMMARY", "TEMPORARY", "RunDirectory", "append_records", "record_problem", "shard_path"]

CONFIG = "config.json"
ITEMS = "items.jsonl"
SUMMARY = "summary.json"
LOCK = ".xaikit.lock"
LOG = LOG_NAME  # third-party output captured during the run (xaikit.quiet)
RUN_FILES = (CONFIG, ITEMS, SUMMARY, LOCK, LOG)
"""Files every run may write; :meth:`RunDirectory.claim` adds a command's own (``metrics.json``, checkpoints)."""
TEMPORARY = re.compile(r"^\..+\.\d+\..+\.tmp$")
"""Names of the temporary files xaikit.io's atomic writes leave when killed mid-write."""
SHARD = re.compile(r"^items\.[1-9]\d*\.jsonl$")
"""Names of the record shards of processes 1, 2, ... of a ``torchrun`` run (:func:`shard_path`)."""


def shard_path(directory: Path, rank: int) -> Path:
    """Where process ``rank`` appends its records: ``items.jsonl`` for process 0, ``items.<rank>.jsonl`` for the others."""
    return Path(directory) / (ITEMS if rank == 0 else f"items.{rank}.jsonl")


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records to a JSON-lines file durably: one write, flushed and fsynced."""
    if not records:
        return
    with Path(path).open("ab") as file:
        file.write(_json_lines(records))
        file.flush()
        os.fsync(file.fileno())


class RunDirectory:
    """The files of one run, locked for this process while it is claimed.

    Use :meth:`claim` (which checks the directory and takes the lock), then :meth:`start` (which
    replaces an old run or reads a resumed one back), :meth:`record` (which writes a new run's
    ``config.json``), then :meth:`append` and :meth:`write_summary`; :meth:`release` (or leaving the
    ``with`` block) gives the lock back.

    Attributes:
        path: the run directory.
        owned: the file names a run writes there, the only ones ``overwrite`` may delete.
        items: finished records read back on resume (or written so far), keyed by ``index``.
    """

    def __init__(self, path: Path, owned: Iterable[str] = ()) -> None:
        self.path = Path(path).expanduser()
        self.owned = frozenset(RUN_FILES) | frozenset(owned)
        self.items: dict[int, dict[str, Any]] = {}
        self._lock: int | None = None
        self._created: list[Path] = []
        self._started = False
        self._resume = self._overwrite = False
        self._config: dict[str, Any] = {}

    @classmethod
    def claim(cls, path: str | os.PathLike[str], *, resume: bool, overwrite: bool, owned: Iterable[str] = ()) -> RunDirectory:
        """Check that ``path`` may hold this run and lock it for this process; nothing is deleted yet.

        Args:
            resume: continue the run found at ``path`` (a directory without one starts afresh).
            overwrite: replace the run at ``path`` (only its own files are deleted, by :meth:`start`).
            owned: file names this command writes besides :data:`RUN_FILES`.

        Raises:
            XaikitError: both flags; ``path`` is a file; another process holds the lock; ``path``
                holds a run and neither flag is given; ``path`` holds files no run writes and is not
                a run to resume.
        """
        run = cls(Path(path), owned)
        if resume and overwrite:
            raise XaikitError("--resume and --overwrite contradict each other; --resume continues the run in --out, --overwrite replaces it")
        if run.path.exists() and not run.path.is_dir():
            raise XaikitError(f"run directory {run.path} is a file")
        run._resume, run._overwrite = resume, overwrite
        run._make_directory()
        try:
            run._take_lock()
            run._check_contents()
        except BaseException:
            run.release()
            raise
        return run

    def _make_directory(self) -> None:
        missing = [parent for parent in (self.path, *self.path.parents) if not parent.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = missing  # innermost first, removed in this order by release() if left empty

    def _take_lock(self) -> None:
        lock = self.path / LOCK
        while True:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
                os.close(descriptor)
                raise XaikitError(
                    f"run directory {self.path} is in use by another xaikit process (pid {holder}); wait for it to finish or choose another --out"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(descriptor).st_ino == os.stat(lock).st_ino:  # not a lock file another process just removed
                    break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._lock = descriptor

    def _check_contents(self) -> None:
        """Classify what is in the directory and refuse what the flags do not allow."""
        self._started = self._is_run()
        foreign = sorted(entry.name for entry in self.path.iterdir() if not self._is_owned(entry.name))
        if self._started and not (self._resume or self._overwrite):
            raise XaikitError(f"run directory {self.path} already holds a run; pass --resume to continue it or --overwrite to replace it")
        if foreign and self._overwrite:
            raise XaikitError(
                f"refusing to overwrite {self.path}: it holds {_listing(foreign)}, which xaikit did not write; "
                "--overwrite replaces only xaikit runs, so move those files or choose another --out"
            )
        if foreign and not self._started:
            raise XaikitError(f"run directory {self.path} holds {_listing(foreign)} and no xaikit run; choose an empty or new --out")

    def _is_owned(self, name: str) -> bool:
        """Whether a run wrote ``name``: any of :attr:`owned` in a run, only the lock and log elsewhere."""
        if TEMPORARY.match(name) or name in (LOCK, LOG):
            return True
        return self._started and (name in self.owned or bool(SHARD.match(name)))

    def _is_run(self) -> bool:
        """Whether ``config.json`` is one that xaikit wrote (it records ``versions.xaikit``)."""
        try:
            config = json.loads((self.path / CONFIG).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and isinstance(config.get("versions"), dict) and "xaikit" in config["versions"]

    def start(self, config: Mapping[str, Any], same: Iterable[str]) -> None:
        """Begin the claimed run: replace or resume what is there; a new run's ``config.json`` waits for :meth:`record`.

        Args:
            config: this run's configuration (it must record ``versions.xaikit``, which marks the
                directory as an xaikit run).
            same: the configuration keys that decide results; a resumed run must agree on them.

        Raises:
            XaikitError: a resumed run's configuration differs on a key of ``same``, or its
                ``items.jsonl`` holds a line xaikit did not write.
        """
        if self._started and self._overwrite:
            for name in sorted(self.owned - {LOCK}) + [path.name for path in self._shards()]:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
            self._started = False
        if self._started:
            self._check_config(config, same)
            self.items = self._read_items()
        self._config = dict(config)

    def record(self) -> None:
        """Write a new run's ``config.json`` (a resumed run keeps its own): from now on the directory holds a run.

        Called once the run's inputs are known to be good (after fitting), so that a command refused
        earlier leaves nothing behind that would refuse the corrected command.
        """
        if not self._started:
            write_json_atomically(self.path / CONFIG, self._config)
            self._started = True

    def release(self) -> None:
        """Give the lock back (removing its file), and remove the directories :meth:`claim` created if the run never wrote there."""
        if self._lock is not None:
            with contextlib.suppress(FileNotFoundError):  # a claimer that opened it re-checks its inode (see _take_lock)
                os.unlink(self.path / LOCK)
            os.close(self._lock)
            self._lock = None
        for directory in self._created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                directory.rmdir()
        self._created = []

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()

    def _check_config(self, config: Mapping[str, Any], same: Iterable[str]) -> None:
        previous = json.loads((self.path / CONFIG).read_text())
        for key in same:
            if previous.get(key) != config.get(key):
                raise XaikitError(
                    f"cannot resume {self.path}: it was started with {key} = {json.dumps(previous.get(key))}, "
                    f"not {json.dumps(config.get(key))}; use another --out or --overwrite"
                )

    def _shards(self) -> list[Path]:
        """The record shards of other processes in the directory, in process order."""
        return sorted((path for path in self.path.iterdir() if SHARD.match(path.name)), key=lambda path: int(path.name.split(".")[1]))

    def _read_items(self) -> dict[int, dict[str, Any]]:
        """Records of ``items.jsonl`` and of every shard, in file order; a torn last line (from a kill) is cut off its file.

        Raises:
            XaikitError: a complete line that is not a record xaikit writes (with its file and line number).
        """
        items: dict[int, dict[str, Any]] = {}
        for path in [self.path / ITEMS, *self._shards()]:
            if path.exists():
                items.update(self._read_records(path))
        return items

    def _read_records(self, path: Path) -> dict[int, dict[str, Any]]:
        """The records of one JSON-lines file, cutting a torn last line off it."""
        items: dict[int, dict[str, Any]] = {}
        good = 0
        with path.open("rb") as file:
            lines = file.readlines()
        for number, line in enumerate(lines, start=1):
            if not line.endswith(b"\n") and number == len(lines):
                break  # torn by a kill while appending: xaikit's own partial line
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            problem = record_problem(record)
            if problem:
                raise XaikitError(f"cannot resume {self.path}: {path.name} line {number} {problem}; remove that line or start again with --overwrite")
            items[record["index"]] = record
            good += len(line)
        if good != path.stat().st_size:
            os.truncate(path, good)
        return items

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add finished records to ``items.jsonl`` durably (flushed and fsynced)."""
        append_records(self.path / ITEMS, records)
        self.items.update((int(record["index"]), record) for record in records)

    def consolidate(self, indices: list[int]) -> None:
        """Merge the other processes' shards into ``items.jsonl``, in the order of ``indices`` (the run's sample).

        ``items.jsonl`` is rewritten atomically only when there are shards or its records are out of
        sample order (a resumed run); the shards are deleted after it is in place, so a kill at any
        point loses no record. Afterwards :attr:`items` holds every record.
        """
        shards = self._shards()
        self.items = self._read_items()
        order = [index for index in indices if index in self.items]
        if shards or list(self.items) != order:
            write_bytes_atomically(self.path / ITEMS, _json_lines([self.items[index] for index in order]))
            for path in shards:
                path.unlink()
            self.items = {index: self.items[index] for index in order}

    def add_timing(self, block: Mapping[str, Any]) -> None:
        """Append one session's wall times to ``config.json``'s ``timing`` list (a resumed run adds one per session).

        Timings live here, not in ``summary.json``, so that a resumed run's summary equals an
        uninterrupted one's.
        """
        config = json.loads((self.path / CONFIG).read_text())
        config["timing"] = [*config.get("timing", []), dict(block)]
        write_json_atomically(self.path / CONFIG, config)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically (strict JSON: a NaN is refused, never written)."""
        write_json_atomically(self.path / SUMMARY, dict(summary))


def record_problem(record: Any) -> str:
    """Why ``record`` is not an ``items.jsonl`` record xaikit writes, or ``""`` when it is one."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return "has no image index"
    if record.get("status") == "skipped":
        return "" if isinstance(record.get("reason"), str) else "is a skipped image without a reason"
    for key in ("label", "prediction"):
        if isinstance(record.get(key), bool) or not isinstance(record.get(key), int):
            return f"has no integer {key}"
    scores = record.get("scores")
    if not isinstance(scores, list) or not scores or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        return "has no list of scores"
    return ""


def _json_lines(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Records as JSON lines: keys sorted, strict JSON (a NaN is refused, never written)."""
    return "".join(json.dumps(record, sort_keys=True, allow_nan=False) + "\n" for record in records).encode()


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
