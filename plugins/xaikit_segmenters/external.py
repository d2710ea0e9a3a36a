"""Helpers for segmenters whose code the user installs: a source checkout, its checkpoint, digests.

VLPart, SAN and OV-PARTS are research repositories, not packages: the user clones one, builds
detectron2, downloads a checkpoint and passes their paths. These helpers turn each missing piece
into one sentence that says what to install or pass, and identify files for fingerprints.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError

__all__ = ["checkpoint", "config_file", "file_digest", "import_module", "source_root", "spec_digest"]


def source_root(path: str | None, package: str, segmenter: str, clone: str) -> Path:
    """The checkout at ``path``, verified to hold ``package`` and put first on ``sys.path``.

    Raises:
        XaikitError: no path, or a directory without ``package`` (says where to clone from).
    """
    if not path:
        raise XaikitError(f"segmenter '{segmenter}' needs source=DIR, a checkout of {clone}")
    root = Path(path).expanduser().resolve()
    if not (root / package).is_dir():
        raise XaikitError(f"{root} is not a checkout of {clone} (it has no {package}/ folder); pass source=DIR")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def config_file(path: str, root: Path, segmenter: str) -> Path:
    """``path``, or ``root / path`` for a path relative to the checkout; it must exist.

    Raises:
        XaikitError: the file exists in neither place.
    """
    for candidate in (Path(path).expanduser(), root / path):
        if candidate.is_file():
            return candidate.resolve()
    raise XaikitError(f"segmenter '{segmenter}' cannot find its config {path} (absolute, or relative to {root})")


def checkpoint(path: str | None, segmenter: str, download: str) -> Path:
    """The checkpoint file at ``path``.

    Raises:
        WeightsUnavailableError: no path or no such file; ``download`` says where to get one.
    """
    if path and Path(path).expanduser().is_file():
        return Path(path).expanduser().resolve()
    found = f"checkpoint {path} does not exist" if path else "needs weights=FILE, its checkpoint"
    raise WeightsUnavailableError(f"segmenter '{segmenter}' {found}; download {download} and pass weights=FILE")


def import_module(name: str, segmenter: str, install: str) -> ModuleType:
    """Import ``name``; a module missing on the way is reported with ``install``.

    Raises:
        MissingDependencyError: naming the missing module and how to install it.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise MissingDependencyError(
            f"segmenter '{segmenter}' needs the Python module '{error.name}', which is not installed; {install}"
        ) from None


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in ``chunk``-sized pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def spec_digest(spec: dict[str, Any]) -> str:
    """A 32-hex-digit key for a JSON-serialisable description (keys sorted)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]
