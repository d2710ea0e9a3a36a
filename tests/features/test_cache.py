"""Tests of the on-disk feature cache: round trips, keys, memory mapping, corruption, atomicity, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from xaikit.features import cache as cache_module
from xaikit.features.cache import FORMAT_VERSION, FeatureCache

NS = "0123456789abcdef0123456789abcdef"
KEY = "ab" * 32


def features(seed: int = 0, d: int = 32) -> dict[str, torch.Tensor]:
    """A float32 entry shaped like a backbone's output: ``cls`` ``(D,)``, ``patches`` and ``layer.8`` ``(4, 5, D)``."""
    g = torch.Generator().manual_seed(seed)
    return {
        "cls": torch.randn(d, generator=g),
        "patches": torch.randn(4, 5, d, generator=g),
        "layer.8": torch.randn(4, 5, d, generator=g) * 100,
    }


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw 16-bit patterns of a float16 tensor, so that NaN and -0.0 compare exactly."""
    return tensor.view(torch.int16)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Both dicts hold the same names in the same order and bit-identical float16 tensors."""
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == torch.float16
        assert a[name].shape == b[name].shape
        assert torch.equal(bits(a[name]), bits(b[name])), name


@pytest.fixture
def store(tmp_path: Path) -> FeatureCache:
    return FeatureCache(tmp_path / "features")


def entry_path(store: FeatureCache, namespace: str = NS, key: str = KEY) -> Path:
    return store.root / namespace / key[:2] / f"{key}.safetensors"


def leftovers(store: FeatureCache) -> list[Path]:
    """Every file under the cache root that is not a finished entry (temporary files)."""
    return [p for p in store.root.rglob("*") if p.is_file() and not p.name.endswith(".safetensors")]


def header_of(path: Path) -> tuple[int, dict]:
    """``(data start, header dict)`` of a safetensors file."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return 8 + length, json.loads(raw[8 : 8 + length])


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_identical(store: FeatureCache) -> None:
    source = features()
    saved = store.save(NS, KEY, source)
    loaded = store.load(NS, KEY)
    assert loaded is not None
    assert list(saved) == ["cls", "layer.8", "patches"]
    assert_same(saved, loaded)
    assert loaded["cls"].shape == (32,) and loaded["patches"].shape == loaded["layer.8"].shape == (4, 5, 32)
    for name, tensor in source.items():
        assert torch.equal(saved[name], tensor.half())
    assert_same(store.load(NS, KEY), loaded)  # warm again: same bits


def test_round_trip_keeps_special_values_scalars_and_empty_tensors(store: FeatureCache) -> None:
    special = torch.tensor([float("nan"), -0.0, 0.0, float("inf"), -float("inf"), 1e-8, 70000.0, 1 / 3])
    source = {
        "special": special.double(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "bf16": torch.ones(3, dtype=torch.bfloat16),
    }
    saved = store.save(NS, KEY, source)
    assert_same(saved, store.load(NS, KEY))
    assert saved["scalar"].shape == () and saved["empty"].shape == (0, 3)


def test_save_returns_contiguous_cpu_copies(store: FeatureCache) -> None:
    base = torch.randn(6, 4, dtype=torch.float16, requires_grad=True)
    view = base.detach().t()  # non-contiguous float16, already the stored dtype
    saved = store.save(NS, KEY, {"grad": base * 2, "view": view, "alias": view})
    assert all(t.is_contiguous() and t.device.type == "cpu" and not t.requires_grad for t in saved.values())
    view.zero_()
    assert not torch.equal(saved["view"], view)  # a copy, not the caller's tensor
    assert_same(saved, store.load(NS, KEY))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_save_accepts_cuda_tensors(store: FeatureCache) -> None:
    saved = store.save(NS, KEY, {k: v.cuda() for k, v in features().items()})
    assert all(t.device.type == "cpu" for t in saved.values())
    assert_same(saved, store.load(NS, KEY))


def test_layout_and_standard_safetensors_file(store: FeatureCache) -> None:
    saved = store.save(NS, KEY, features())
    path = entry_path(store)
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == [path]
    standard = safetensors.torch.load_file(path)
    assert_same(saved, dict(sorted(standard.items())))
    with safetensors.safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata[cache_module._FORMAT_KEY] == FORMAT_VERSION
    assert len(metadata[cache_module._CHECKSUM_KEY]) == 64


def test_missing_entry_is_none(store: FeatureCache) -> None:
    assert store.load(NS, KEY) is None
    store.save(NS, KEY, features())
    assert store.load(NS, "cd" * 32) is None
    assert store.load("f" * 32, KEY) is None


# ------------------------------------------------------------------------------------------- image keys


def test_image_key_is_stable() -> None:
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    key = FeatureCache.image_key(image)
    assert len(key) == 64 and int(key, 16) >= 0
    assert FeatureCache.image_key(image) == key
    assert FeatureCache.image_key(image.copy()) == key
    flipped = image[:, ::-1]
    assert FeatureCache.image_key(flipped) == FeatureCache.image_key(np.ascontiguousarray(flipped))


def test_image_key_changes_with_pixels_shape_and_dtype() -> None:
    image = np.zeros((12, 10, 3), dtype=np.uint8)
    key = FeatureCache.image_key(image)
    changed = image.copy()
    changed[5, 7, 1] = 1
    keys = {
        key,
        FeatureCache.image_key(changed),
        FeatureCache.image_key(image.reshape(10, 12, 3)),  # same bytes, other shape
        FeatureCache.image_key(image.view(np.int8)),  # same bytes, other dtype
        FeatureCache.image_key(image.astype(np.float32)),
    }
    assert len(keys) == 5


def test_image_key_rejects_object_arrays() -> None:
    with pytest.raises(ValueError, match="objects"):
        FeatureCache.image_key(np.array([object(), object()]))


# ------------------------------------------------------------------------------------------- memory mapping


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that map ``path`` (from /proc/self/maps)."""
    target = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.rstrip("\n").split(maxsplit=5)
            if len(fields) == 6 and fields[5] == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps (Linux)")
def test_loaded_tensors_are_views_of_a_file_mapping(store: FeatureCache) -> None:
    store.save(NS, KEY, {"patches": torch.randn(64, 64, 256)})  # 2 MiB of data
    loaded = store.load(NS, KEY)
    assert loaded is not None
    ranges = mapped_ranges(entry_path(store))
    assert ranges, "the entry file is not mapped"
    tensor = loaded["patches"]
    first, last = tensor.data_ptr(), tensor.data_ptr() + tensor.nbytes - 1
    assert any(start <= first and last < end for start, end in ranges)
    assert tensor.untyped_storage().nbytes() == entry_path(store).stat().st_size  # not a copy of the data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_held_entries_keep_no_file_descriptors_open(store: FeatureCache) -> None:
    keys = [f"{i:064x}" for i in range(50)]
    for key in keys:
        store.save(NS, key, features(d=4))
    before = len(os.listdir("/proc/self/fd"))
    held = [store.load(NS, key) for key in keys]
    assert all(entry is not None for entry in held)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_loaded_tensors_are_writable_copy_on_write(store: FeatureCache) -> None:
    saved = store.save(NS, KEY, features())
    before = entry_path(store).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = store.load(NS, KEY)
    assert loaded is not None
    loaded["patches"].add_(1)
    assert entry_path(store).read_bytes() == before
    assert_same(saved, store.load(NS, KEY))


# ------------------------------------------------------------------------------------------- corruption


def assert_discarded(store: FeatureCache) -> None:
    assert store.load(NS, KEY) is None
    assert not entry_path(store).exists()


@pytest.mark.parametrize("where", ["empty", "prefix", "after prefix", "header", "end of header", "data", "last byte"])
def test_truncated_entry_is_discarded(store: FeatureCache, where: str) -> None:
    store.save(NS, KEY, features())
    path = entry_path(store)
    raw = path.read_bytes()
    start, _ = header_of(path)
    cut = {
        "empty": 0,
        "prefix": 5,
        "after prefix": 8,
        "header": 8 + (start - 8) // 2,
        "end of header": start,
        "data": start + (len(raw) - start) // 2,
        "last byte": len(raw) - 1,
    }[where]
    path.write_bytes(raw[:cut])
    assert_discarded(store)


@pytest.mark.parametrize("fraction", [0.0, 0.37, 0.999])
def test_flipped_data_byte_is_discarded(store: FeatureCache, fraction: float) -> None:
    store.save(NS, KEY, features())
    path = entry_path(store)
    raw = bytearray(path.read_bytes())
    start, _ = header_of(path)
    raw[start + int(fraction * (len(raw) - start))] ^= 0x10
    path.write_bytes(bytes(raw))
    assert_discarded(store)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00" * 3,
        (10).to_bytes(8, "little") + b"not json{",
        (2**62).to_bytes(8, "little") + b"{}",
        (4).to_bytes(8, "little") + b"[1] ",
        (2).to_bytes(8, "little") + b"{}",  # no metadata
        (4).to_bytes(8, "little") + b"\xff\xfe{}",
    ],
    ids=["short", "not json", "huge length", "not an object", "no metadata", "not utf-8"],
)
def test_garbage_file_is_discarded(store: FeatureCache, content: bytes) -> None:
    store.save(NS, KEY, features())
    entry_path(store).write_bytes(content)
    assert_discarded(store)


def rewrite_header(path: Path, edit) -> None:
    """Apply ``edit`` to the parsed header and write the file back with the same data section."""
    raw = path.read_bytes()
    start, header = header_of(path)
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[start:])


def edit_version(header: dict) -> None:
    header["__metadata__"][cache_module._FORMAT_KEY] = "999"


def edit_shape(header: dict) -> None:
    header["patches"]["shape"] = [5, 4, 32]  # same byte count, other shape


def edit_dtype(header: dict) -> None:
    header["cls"]["dtype"] = "BF16"


def edit_offsets(header: dict) -> None:
    header["cls"]["data_offsets"][1] += 10**6


def edit_odd_offset(header: dict) -> None:
    header["cls"]["data_offsets"] = [o + 1 for o in header["cls"]["data_offsets"]]


def edit_checksum(header: dict) -> None:
    header["__metadata__"].pop(cache_module._CHECKSUM_KEY)


def edit_drop_tensor(header: dict) -> None:
    header.pop("cls")


def edit_no_tensors(header: dict) -> None:
    for name in [n for n in header if n != "__metadata__"]:
        header.pop(name)


@pytest.mark.parametrize(
    "edit",
    [
        edit_version,
        edit_shape,
        edit_dtype,
        edit_offsets,
        edit_odd_offset,
        edit_checksum,
        edit_drop_tensor,
        edit_no_tensors,
    ],
)
def test_inconsistent_header_is_discarded(store: FeatureCache, edit) -> None:
    store.save(NS, KEY, features())
    rewrite_header(entry_path(store), edit)
    assert_discarded(store)


def test_rewritten_header_with_no_edit_still_loads(store: FeatureCache) -> None:
    """The checksum depends on the tensors, not on the file layout."""
    saved = store.save(NS, KEY, features())
    path = entry_path(store)
    before = path.read_bytes()

    def reverse(header: dict) -> None:
        items = list(header.items())
        header.clear()
        header.update(reversed(items))
        header["__metadata__"]["note"] = "padding " * 5

    rewrite_header(path, reverse)
    assert path.read_bytes() != before
    assert_same(saved, store.load(NS, KEY))


def test_float32_file_with_valid_metadata_is_discarded(store: FeatureCache) -> None:
    store.save(NS, KEY, features())
    path = entry_path(store)
    with safetensors.safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    safetensors.torch.save_file({k: v.float() for k, v in safetensors.torch.load_file(path).items()}, path, metadata)
    assert_discarded(store)


def test_corrupt_entry_replaced_meanwhile_is_kept(store: FeatureCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that found a bad file does not delete the good one a writer has just put in its place."""
    store.save(NS, KEY, features(seed=1))
    entry_path(store).write_bytes(b"garbage!" * 4)
    read_entry = cache_module._read_entry

    def racing(raw: torch.Tensor) -> dict[str, torch.Tensor]:
        FeatureCache(store.root).save(NS, KEY, features(seed=2))
        return read_entry(raw)

    monkeypatch.setattr(cache_module, "_read_entry", racing)
    assert store.load(NS, KEY) is None
    monkeypatch.undo()
    assert_same(store.load(NS, KEY), {k: v.half() for k, v in sorted(features(seed=2).items())})


def test_corrupt_entry_is_recomputed(store: FeatureCache) -> None:
    store.save(NS, KEY, features())
    entry_path(store).write_bytes(b"\x00" * 100)
    assert store.load(NS, KEY) is None
    saved = store.save(NS, KEY, features())
    assert_same(saved, store.load(NS, KEY))


# ------------------------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("step", ["fsync", "replace", "write"])
@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_failed_write_leaves_no_file(
    store: FeatureCache, monkeypatch: pytest.MonkeyPatch, step: str, error: type[BaseException]
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error("disk on fire")

    if step == "write":  # the temporary file gets half of the bytes, then the write fails
        real_fdopen = os.fdopen

        def half_writer(fd: int, *args: object, **kwargs: object):
            file = real_fdopen(fd, *args, **kwargs)
            real_write = file.write
            file.write = lambda data: (real_write(data[: len(data) // 2]), fail())  # type: ignore[method-assign]
            return file

        monkeypatch.setattr(cache_module.os, "fdopen", half_writer)
    else:
        monkeypatch.setattr(cache_module.os, step, fail)
    with pytest.raises(error):
        store.save(NS, KEY, features())
    monkeypatch.undo()
    assert not entry_path(store).exists()
    assert leftovers(store) == []


def test_failed_write_keeps_previous_entry(store: FeatureCache, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = store.save(NS, KEY, features(seed=1))

    def fail(*args: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(cache_module.os, "replace", fail)
    with pytest.raises(OSError):
        store.save(NS, KEY, features(seed=2))
    monkeypatch.undo()
    assert_same(saved, store.load(NS, KEY))
    assert leftovers(store) == []


def test_concurrent_thread_writers_leave_a_valid_entry(store: FeatureCache) -> None:
    candidates = [store.save(NS, "cd" * 32, features(seed=s)) for s in range(6)]
    errors: list[str] = []

    def writer(seed: int) -> None:
        for _ in range(15):
            store.save(NS, KEY, features(seed=seed))
            if store.load(NS, KEY) is None:
                errors.append("a reader saw no valid entry")

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = store.load(NS, KEY)
    assert final is not None
    assert any(all(torch.equal(final[k], c[k]) for k in c) for c in candidates)
    assert leftovers(store) == []


WRITER = textwrap.dedent(
    """
    import sys
    import torch
    from xaikit.features.cache import FeatureCache

    root, namespace, key, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = FeatureCache(root)
    g = torch.Generator().manual_seed(seed)
    tensors = {"cls": torch.randn(64, generator=g), "patches": torch.randn(16, 16, 64, generator=g)}
    for _ in range(30):
        store.save(namespace, key, tensors)
        if store.load(namespace, key) is None:
            sys.exit("a reader saw no valid entry")
    """
)


def test_concurrent_process_writers_leave_a_valid_entry(store: FeatureCache) -> None:
    seeds = range(4)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(store.root), NS, KEY, str(seed)], stderr=subprocess.PIPE)
        for seed in seeds
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()
    final = store.load(NS, KEY)
    assert final is not None
    expected = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        expected.append([torch.randn(64, generator=g).half(), torch.randn(16, 16, 64, generator=g).half()])
    assert any(torch.equal(final["cls"], c) and torch.equal(final["patches"], p) for c, p in expected)
    assert leftovers(store) == []


# ------------------------------------------------------------------------------------------- clear, root


def test_clear_one_namespace_or_everything(store: FeatureCache) -> None:
    other = "f" * 32
    store.save(NS, KEY, features())
    store.save(other, KEY, features())
    store.clear(NS)
    assert store.load(NS, KEY) is None and store.load(other, KEY) is not None
    store.clear(NS)  # already gone: no error
    store.clear()
    assert not store.root.exists()
    assert store.load(other, KEY) is None
    store.clear()  # nothing there: no error


def test_clear_deletes_only_cache_entries(store: FeatureCache) -> None:
    store.save(NS, KEY, features())
    (store.root / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (store.root / "notes.txt").write_text("mine")
    (store.root / NS / "mine.txt").write_text("mine too")
    store.clear()
    assert store.load(NS, KEY) is None
    assert (store.root / "notes.txt").read_text() == "mine" and (store.root / NS / "mine.txt").exists()


def test_default_root_follows_the_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path / "xdg"))
    store = FeatureCache()
    assert store.root == tmp_path / "xdg" / "features"
    monkeypatch.setenv("XAIKIT_CACHE_DIR", str(tmp_path / "elsewhere"))  # read at construction time
    store.save(NS, KEY, features())
    assert entry_path(store).is_relative_to(tmp_path / "xdg" / "features") and entry_path(store).exists()
    assert FeatureCache(str(tmp_path / "xdg" / "features")).load(NS, KEY) is not None


# ------------------------------------------------------------------------------------------- invalid input


BAD_NAMESPACES = ["", "..", "../x", "a/b", "a.b", "ab cd", "é1", "a" * 129, 12]
BAD_KEYS = ["a", "", "../../etc", "ab/cd", "ab\x00cd", "a" * 129, None]


@pytest.mark.parametrize("namespace", BAD_NAMESPACES)
def test_invalid_namespace_is_rejected(store: FeatureCache, namespace: object) -> None:
    with pytest.raises(ValueError, match="namespace"):
        store.load(namespace, KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        store.save(namespace, KEY, features())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        store.clear(namespace)  # type: ignore[arg-type]
    assert not store.root.exists()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_key_is_rejected(store: FeatureCache, key: object) -> None:
    with pytest.raises(ValueError, match="key"):
        store.load(NS, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        store.save(NS, key, features())  # type: ignore[arg-type]
    assert not store.root.exists()


@pytest.mark.parametrize(
    "value",
    [
        torch.arange(4),
        torch.ones(2, dtype=torch.bool),
        torch.ones(2, dtype=torch.complex64),
        np.ones(3, np.float32),
        1.0,
    ],
    ids=["int64", "bool", "complex", "numpy", "float"],
)
def test_non_floating_tensor_is_rejected(store: FeatureCache, value: object) -> None:
    with pytest.raises(ValueError, match="floating-point tensor"):
        store.save(NS, KEY, {"cls": torch.zeros(3), "bad": value})  # type: ignore[dict-item]
    assert not store.root.exists()


@pytest.mark.parametrize("tensors", [{}, {"": torch.zeros(2)}, {"__metadata__": torch.zeros(2)}, {3: torch.zeros(2)}])
def test_empty_entry_or_bad_name_is_rejected(store: FeatureCache, tensors: dict) -> None:
    with pytest.raises(ValueError):
        store.save(NS, KEY, tensors)
    assert not store.root.exists()
