"""``xaikit doctor``: one line per piece of a segmenter's setup, exit 0 only when every piece is ok; nothing built."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from xaikit.cli import main
from xaikit_segmenters.vlpart import BUILTIN_CLASSIFIER, DEFAULT_CONFIG, SETUP

_spec = importlib.util.spec_from_file_location("xaikit_tests_seeded", Path(__file__).resolve().parents[1] / "integration" / "seeded.py")
seeded = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded)


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, tuple[str, str]], list[str]]:
    """Run ``xaikit doctor ARGS``: the exit code, ``{piece: (status, detail)}``, and the verdict line or standard error's lines."""
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    pieces = dict((name, (status, detail)) for status, name, detail in map(_split, lines[:-1]))
    return code, pieces, lines[-1:] + captured.err.strip().splitlines()


def _split(line: str) -> tuple[str, str, str]:
    """``status  name  detail``; a module piece's name is two words (``module clip``)."""
    status, rest = line.split(maxsplit=1)
    if rest.startswith("module "):
        _, module, detail = rest.split(maxsplit=2)
        return status, f"module {module}", detail
    name, detail = rest.split(maxsplit=1)
    return status, name, detail


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A stand-in VLPart checkout: ``vlpart/``, a config over a ``_BASE_`` whose classifier path it overrides, no classifiers."""
    root = tmp_path / "VLPart"
    (root / "vlpart").mkdir(parents=True)
    config = root / DEFAULT_CONFIG
    config.parent.mkdir(parents=True)
    (config.parent / "base.yaml").write_text("MODEL:\n  ROI_BOX_HEAD:\n    ZEROSHOT_WEIGHT_PATH: datasets/metadata/base.npy\n")
    config.write_text("_BASE_: base.yaml\nMODEL:\n  ROI_BOX_HEAD:\n    ZEROSHOT_WEIGHT_PATH: datasets/metadata/part.npy\n")
    return root


def test_a_missing_source_root_is_one_line_with_its_hint_and_exit_2(capsys):
    code, pieces, verdict = doctor(capsys, "vlpart")
    assert code == 2 and len(verdict) == 1 and verdict[0].endswith(f"of {len(pieces)} pieces are not ready")
    assert pieces["source"][0] == "missing" and "source=DIR" in pieces["source"][1] and SETUP.clone in pieces["source"][1]
    assert pieces["config"] == ("skipped", "needs the source checkout")
    assert pieces["weights"][0] == "missing" and "r50_pascalpart.pth" in pieces["weights"][1]
    assert {f"module {module}" for module, _ in SETUP.modules} <= set(pieces)


def test_a_pickled_checkpoint_needs_trust_pickle_and_is_never_unpickled(capsys, checkout, tmp_path):
    marker = tmp_path / "marker"
    weights = tmp_path / "evil.pth"
    weights.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # os.system("touch marker")
    code, pieces, _ = doctor(capsys, "vlpart", "--option", f"source={checkout}", "--option", f"weights={weights}")
    assert code == 2 and pieces["weights"][0] == "missing" and "needs trust_pickle=true" in pieces["weights"][1]
    assert pieces["source"] == ("ok", str(checkout.resolve())) and pieces["config"][0] == "ok"
    # the config's classifier overrides its base's: only the overriding file and the built-in classifier are needed
    assert pieces["datasets/metadata/part.npy"][0] == "missing" and "datasets/metadata/base.npy" not in pieces
    assert pieces[BUILTIN_CLASSIFIER][0] == "missing"
    _, trusted, _ = doctor(capsys, "vlpart", "--option", f"source={checkout}", "--option", f"weights={weights}", "--option", "trust_pickle=true")
    assert trusted["weights"][0] == "ok" and "trust_pickle=true" in trusted["weights"][1]
    assert not marker.exists()


def test_the_vendored_checkout_with_a_safe_checkpoint_is_ready(capsys, tmp_path):
    for module in ("detectron2._C", *(module for module, _ in SETUP.modules)):
        pytest.importorskip(module, reason=f"{module} is not installed (VLPart's setup, docs/segmenters.md#vlpart)")
    source = seeded.extract("VLPart")
    if source is None:
        pytest.skip(f"no VLPart source snapshot in {seeded.VENDOR}")
    weights = tmp_path / "tiny.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(2, 3)}}, weights)  # read, never fitted to a model
    code, pieces, verdict = doctor(
        capsys, "vlpart", "--option", f"source={source}", "--option", f"weights={weights}", "--option", "vocabulary=bird beak"
    )
    assert code == 0, pieces
    assert pieces["detectron2"][0] == "ok" and pieces[BUILTIN_CLASSIFIER] == ("ok", str(source.resolve() / BUILTIN_CLASSIFIER))
    assert pieces["weights"] == ("ok", f"{weights} (1 tensors, read without unpickling)")
    assert verdict == [f"vlpart: ready ({len(pieces)} pieces ok)"]


def test_ov_parts_also_checks_for_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, pieces, _ = doctor(capsys, "ov-parts")
    assert code == 2 and pieces["CUDA"] == ("missing", "ov-parts runs only on CUDA")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clipseg"], "error: xaikit doctor checks the segmenters whose code you install (vlpart, san, ov-parts), not 'clipseg'"),
        (["san", "--option", "colour=red"], "error: segmenter 'san' has no option 'colour'; see xaikit info segmenter san"),
        (["vlpart", "--option", "trust_pickle=perhaps"], "error: segmenter 'vlpart' option 'trust_pickle' must be"),
    ],
)
def test_unknown_segmenters_and_options_are_one_sentence(capsys, args, message):
    code, pieces, errors = doctor(capsys, *args)
    assert code == 2 and not pieces and len(errors) == 1 and errors[0].startswith(message)


def test_a_plain_environment_names_detectron2_and_each_package_to_install(capsys, monkeypatch, checkout):
    for module in ("detectron2", "detectron2._C", "clip"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError, as without the package
    code, pieces, _ = doctor(capsys, "vlpart", "--option", f"source={checkout}")
    assert code == 2
    assert pieces["detectron2"][0] == "missing" and "--no-build-isolation" in pieces["detectron2"][1]
    assert pieces["module clip"][0] == "missing" and "pip install clip-anytorch 'setuptools<80'" in pieces["module clip"][1]
    assert pieces["source"][0] == "ok"
