"""Atomic file writes (readers see the old file or all of the new one, never a mixture) and inter-process locks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["IMAGE_FORMATS", "exclusive", "write_bytes_atomically", "write_image_atomically", "write_json_atomically"]

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".pdf": "PDF"}
"""The figure files xaikit writes, by suffix: PNG (lossless, the default), JPEG and PDF (a raster page, for LaTeX)."""


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or all of the new one.

    The bytes go to a uniquely named temporary file in the same directory, are flushed and fsynced, then
    renamed over ``path``; the temporary file is removed if anything fails. Concurrent writers of the same
    path each use their own temporary file, so the last rename wins and the file is never mixed.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold the machine-wide lock ``name`` (an OS ``flock`` in the cache's ``locks/``) for the block.

    Processes that would make the same thing at once (two ``torchrun`` processes generating a dataset)
    take turns; the one that waited should check again whether the thing is made. The lock file stays
    (it is tiny, and removing it safely needs the holder to outlive every waiter); the kernel drops the
    lock when its holder dies.
    """
    import fcntl
    import hashlib

    from xaikit.paths import cache_dir

    directory = cache_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / f"{hashlib.blake2b(name.encode(), digest_size=16).hexdigest()}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomically(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented, key-sorted, strict JSON (no NaN or infinity) with :func:`write_bytes_atomically`."""
    write_bytes_atomically(path, (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def write_image_atomically(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode an RGB ``(H, W, 3)`` (or grey ``(H, W)``) ``uint8`` image in the format its suffix names and write it atomically.

    Raises:
        ValueError: a suffix other than those of :data:`IMAGE_FORMATS` (commands check theirs up front).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{path}: an image file ends in {', '.join(IMAGE_FORMATS)}, not '{suffix}'")
    buffer = io.BytesIO()
    options = {"quality": 95} if IMAGE_FORMATS[suffix] == "JPEG" else {"resolution": 150.0} if IMAGE_FORMATS[suffix] == "PDF" else {}
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=IMAGE_FORMATS[suffix], **options)
    write_bytes_atomically(path, buffer.getvalue())
