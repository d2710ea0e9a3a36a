"""On-disk cache of per-image ViT features: float16 safetensors files, atomic writes, memory-mapped reads.

An entry holds the tensors one backbone computed for one image, e.g. ``cls`` ``(D,)``, ``patches``
``(h, w, D)`` and ``layer.<i>`` ``(h, w, D)``, all stored as float16. Entries live at
``<root>/<namespace>/<key[:2]>/<key>.safetensors`` where ``namespace`` identifies backbone, weights,
preprocessing and layers (computed by the caller) and ``key`` is :meth:`FeatureCache.image_key`.

Each file is a standard safetensors file whose ``__metadata__`` holds the cache format version and a
BLAKE2b checksum over the tensors (name, shape and raw bytes, in sorted-name order). Writes go to a
temporary file that is fsynced and renamed into place. :meth:`FeatureCache.load` maps the file privately
(``torch.from_file(shared=False)``: copy-on-write, paged in lazily, no file descriptor kept open), parses
the header itself and returns zero-copy views of the mapping; an entry that is truncated, malformed, of
another format version or fails its checksum is deleted and reported as absent, so the caller recomputes it.
Entries are never modified in place, which is what makes mapping them safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from xaikit.io import write_bytes_atomically
from xaikit.paths import cache_dir

__all__ = ["FORMAT_VERSION", "FeatureCache", "tensor_checksum"]

FORMAT_VERSION = "1"
"""Version of the entry layout; an entry written under another version is treated as corrupt."""

_FORMAT_KEY = "xaikit.feature_cache.format"
_CHECKSUM_KEY = "xaikit.feature_cache.blake2b"
_SUFFIX = ".safetensors"
_DTYPE = torch.float16
_DTYPE_NAME = "F16"
_ITEMSIZE = 2
_NAMESPACE = re.compile(r"[0-9A-Za-z]{1,128}")
_KEY = re.compile(r"[0-9A-Za-z]{2,128}")

_log = logging.getLogger(__name__)


def _is_entry_file(name: str) -> bool:
    """Whether ``name`` is a cache entry (``<key>.safetensors``) or a temporary file of one (``.<key>.<pid>.*.tmp``)."""
    if name.endswith(_SUFFIX):
        return bool(_KEY.fullmatch(name[: -len(_SUFFIX)]))
    return name.startswith(".") and name.endswith(".tmp") and bool(_KEY.fullmatch(name[1:].partition(".")[0]))


class _CorruptEntry(Exception):
    """An entry on disk that cannot be trusted; the message says why."""


def _checksum(entries: Iterable[tuple[str, list[int], Any]]) -> str:
    """BLAKE2b-256 hex digest over ``(name, shape, raw bytes)`` triples, which must come sorted by name.

    Names and shapes are hashed as one JSON line per tensor before its bytes, so neither the file layout
    nor a tampered header can give the same digest for different tensors.
    """
    digest = hashlib.blake2b(digest_size=32)
    for name, shape, data in entries:
        digest.update(json.dumps([name, shape]).encode() + b"\n")
        digest.update(data)
    return digest.hexdigest()


def tensor_checksum(tensors: Mapping[str, torch.Tensor], extra: bytes = b"") -> str:
    """The cache's BLAKE2b-256 checksum of named tensors (any dtype), plus ``extra`` bytes (e.g. JSON metadata).

    Used by other on-disk caches (KLC's gallery) to verify an entry before trusting it.
    """
    entries = [(name, list(tensors[name].shape), _tensor_bytes(tensors[name].detach().cpu().contiguous())) for name in sorted(tensors)]
    return _checksum([*entries, ("__extra__", [len(extra)], extra)])


def _to_float16(name: object, tensor: object) -> torch.Tensor:
    """A fresh contiguous CPU float16 copy of one floating-point tensor, same shape.

    Raises:
        ValueError: the name is not a plain string or the tensor is not a floating-point ``torch.Tensor``.
    """
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise ValueError(f"feature names must be non-empty strings other than '__metadata__', got {name!r}")
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"feature {name!r} must be a floating-point tensor, got {kind}")
    return tensor.detach().to(device="cpu", dtype=_DTYPE, copy=True, memory_format=torch.contiguous_format)


def _tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """The raw bytes of a contiguous CPU tensor as a flat uint8 array (a view, no copy)."""
    return tensor.reshape(-1).view(torch.uint8).numpy()


def _map_file(path: Path, size: int) -> torch.Tensor:
    """The file's ``(size,)`` uint8 bytes as a private, copy-on-write, lazily paged memory mapping.

    Edits of the tensor never reach the file, and no file descriptor stays open while it lives.

    Raises:
        OSError: the file vanished, shrank below ``size`` or cannot be opened or mapped.
    """
    if size == 0:  # an empty file cannot be mapped; it is simply too short to be an entry
        return torch.empty(0, dtype=torch.uint8)
    try:
        return torch.from_file(os.fspath(path), shared=False, size=size, dtype=torch.uint8)
    except RuntimeError as error:
        raise OSError(f"cannot map {path}: {error}") from None


def _parse_header(raw: np.ndarray) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Split the bytes of a safetensors file into ``(data start, tensor entries, metadata)``.

    Raises:
        _CorruptEntry: the length prefix or the JSON header is missing, truncated or not an object.
    """
    if len(raw) < 8:
        raise _CorruptEntry("shorter than the 8-byte header length")
    length = int.from_bytes(raw[:8].tobytes(), "little")
    if length > len(raw) - 8:
        raise _CorruptEntry(f"header length {length} runs past the end of the file")
    try:
        header = json.loads(raw[8 : 8 + length].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _CorruptEntry(f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise _CorruptEntry("header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        raise _CorruptEntry("header has no metadata")
    return 8 + length, header, metadata


def _is_count(value: object) -> bool:
    """Whether ``value`` is a JSON non-negative integer (booleans excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_span(name: str, entry: object, start: int, size: int) -> tuple[list[int], int, int]:
    """Validate one header entry and return ``(shape, begin, end)`` as byte offsets into the file.

    Args:
        name: the tensor's name, for messages.
        entry: its header entry, ``{"dtype", "shape", "data_offsets"}``.
        start: where the data section begins in the file.
        size: the file's size in bytes.

    Raises:
        _CorruptEntry: wrong dtype, malformed shape or offsets, misaligned data, or data outside the file.
    """
    if not isinstance(entry, dict) or entry.get("dtype") != _DTYPE_NAME:
        raise _CorruptEntry(f"tensor {name!r} is not a float16 entry")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise _CorruptEntry(f"tensor {name!r} has a malformed shape")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
        raise _CorruptEntry(f"tensor {name!r} has malformed data offsets")
    begin, end = start + offsets[0], start + offsets[1]
    if not begin <= end <= size or end - begin != math.prod(shape) * _ITEMSIZE or begin % _ITEMSIZE:
        raise _CorruptEntry(f"tensor {name!r} bytes [{begin}, {end}) do not fit its shape or the file")
    return shape, begin, end


def _read_entry(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Verify the ``(size,)`` uint8 bytes of a cache file and return its float16 tensors, sorted by name.

    The tensors are views of ``raw`` (no copy). Nothing is returned unless the checksum matches.

    Raises:
        _CorruptEntry: anything about the file is wrong (see :func:`_parse_header`, :func:`_tensor_span`),
            the format version differs, or the checksum does not match.
    """
    data = raw.numpy()
    start, header, metadata = _parse_header(data)
    if metadata.get(_FORMAT_KEY) != FORMAT_VERSION:
        raise _CorruptEntry(f"format version {metadata.get(_FORMAT_KEY)!r} is not {FORMAT_VERSION!r}")
    spans = {name: _tensor_span(name, header[name], start, len(data)) for name in sorted(header)}
    if not spans:
        raise _CorruptEntry("entry holds no tensors")
    if _checksum((name, shape, data[b:e]) for name, (shape, b, e) in spans.items()) != metadata.get(_CHECKSUM_KEY):
        raise _CorruptEntry("checksum mismatch")
    return {name: raw[b:e].view(_DTYPE).reshape(shape) for name, (shape, b, e) in spans.items()}


def _discard(path: Path, stat: os.stat_result) -> None:
    """Delete the corrupt file at ``path`` unless a writer has already replaced it with another file."""
    with contextlib.suppress(OSError):
        if os.path.samestat(os.stat(path), stat):
            os.unlink(path)


class FeatureCache:
    """On-disk cache of per-image feature tensors (float16, safetensors files, memory-mapped reads).

    Attributes:
        root: directory holding one sub-directory per namespace.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        """Use ``root``, by default ``xaikit.paths.cache_dir() / "features"`` (read now, created on first save)."""
        self.root: Path = Path(root) if root is not None else cache_dir() / "features"

    @staticmethod
    def image_key(image: np.ndarray) -> str:
        """Hex SHA-256 of a decoded image's dtype, shape and bytes, e.g. of an ``(H, W, 3)`` uint8 array.

        Raises:
            ValueError: the array holds Python objects, whose bytes are not their content.
        """
        array = np.ascontiguousarray(image)
        if array.dtype.hasobject:
            raise ValueError("cannot hash an image array of Python objects")
        digest = hashlib.sha256(json.dumps([array.dtype.str, list(array.shape)]).encode() + b"\n")
        digest.update(array.reshape(-1).view(np.uint8))
        return digest.hexdigest()

    def load(self, namespace: str, key: str) -> dict[str, torch.Tensor] | None:
        """The float16 tensors cached for ``key`` in ``namespace``, sorted by name, or ``None``.

        The tensors are views of a private (copy-on-write) memory mapping of the file: pages are read from
        disk as they are touched and in-place edits never reach the file. All tensors of an entry share
        the mapping of the whole file as their storage (so ``torch.save`` of one of them writes the whole
        entry; convert or ``clone()`` first). ``None`` means the entry is absent
        or was unreadable, truncated, malformed, of another format version or failed its checksum; in the
        latter cases the file has been deleted so that the caller recomputes and saves it.

        Raises:
            ValueError: ``namespace`` or ``key`` is not a plain alphanumeric string.
        """
        path = self._path(namespace, key)
        try:
            stat = os.stat(path)
            raw = _map_file(path, stat.st_size)
        except FileNotFoundError:
            return None
        except OSError as error:  # e.g. permissions, or replaced meanwhile: not evidence of corruption
            _log.debug("feature cache entry %s is unreadable: %s", path, error)
            return None
        try:
            return _read_entry(raw)
        except _CorruptEntry as error:
            _log.debug("discarding corrupt feature cache entry %s: %s", path, error)
            _discard(path, stat)
            return None

    def save(self, namespace: str, key: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Store ``tensors`` (any floating dtype and device, e.g. ``cls`` ``(D,)``, ``patches`` ``(h, w, D)``).

        Returns:
            Contiguous CPU float16 copies sorted by name, bit-identical to what a later :meth:`load` returns.

        Raises:
            ValueError: bad ``namespace`` or ``key``, no tensors, a non-string name or a non-floating tensor.
            OSError: the file could not be written (no partial or temporary file is left behind).
        """
        path = self._path(namespace, key)
        converted = dict(sorted((name, _to_float16(name, tensor)) for name, tensor in tensors.items()))
        if not converted:
            raise ValueError("refusing to cache an entry without tensors")
        checksum = _checksum((name, list(t.shape), _tensor_bytes(t)) for name, t in converted.items())
        data = safetensors.torch.save(converted, metadata={_FORMAT_KEY: FORMAT_VERSION, _CHECKSUM_KEY: checksum})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, data)
        return converted

    def clear(self, namespace: str | None = None) -> None:
        """Delete every entry of ``namespace``, or with ``None`` of every namespace under :attr:`root`.

        Only cache entries (``<namespace>/<xx>/<key>.safetensors`` and their temporary files) are
        deleted, then the folders they leave empty: whatever else lives under :attr:`root` (the
        user may point ``XAIKIT_CACHE_DIR`` at a shared folder) stays.

        Raises:
            ValueError: ``namespace`` is not a plain alphanumeric string.
        """
        folders = [self._namespace_dir(namespace)] if namespace is not None else [
            path for path in (self.root.iterdir() if self.root.is_dir() else ()) if _NAMESPACE.fullmatch(path.name)
        ]
        for folder in folders:
            for shard in folder.glob("*/") if folder.is_dir() else ():
                for entry in shard.iterdir():
                    if _is_entry_file(entry.name):
                        with contextlib.suppress(FileNotFoundError):
                            entry.unlink()
                with contextlib.suppress(OSError):
                    shard.rmdir()
            with contextlib.suppress(OSError):
                folder.rmdir()
        if namespace is None:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def _namespace_dir(self, namespace: str) -> Path:
        """``<root>/<namespace>`` after checking that ``namespace`` is 1 to 128 ASCII letters or digits."""
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"feature cache namespace must be 1-128 ASCII letters or digits, got {namespace!r}")
        return self.root / namespace

    def _path(self, namespace: str, key: str) -> Path:
        """``<root>/<namespace>/<key[:2]>/<key>.safetensors`` after checking both parts."""
        directory = self._namespace_dir(namespace)
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"feature cache key must be 2-128 ASCII letters or digits, got {key!r}")
        return directory / key[:2] / f"{key}{_SUFFIX}"
