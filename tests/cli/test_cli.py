"""The ``xaikit`` command line: listings, one-line errors with exit codes, data commands."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xaikit.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "xaikit", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {lines}"
    return lines[0]


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("xaikit")
    assert script.exists(), "the xaikit console script is not installed next to the interpreter"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "plugins" in result.stdout and "data" in result.stdout


@pytest.mark.parametrize("command", [[], ["plugins"], ["list"], ["info"], ["data"], ["data", "synth"], ["data", "check"], ["features"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: xaikit" in capsys.readouterr().out


def test_plugins_json_lists_every_component_with_its_fields(capsys, builtin_plugins):
    assert main(["plugins", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    components = {(c["kind"], c["name"]): c for c in payload["components"]}
    assert set(components) >= {("dataset", "cub"), ("dataset", "synthetic-birds")}
    for component in payload["components"]:
        assert {"kind", "name", "summary", "plugin", "version", "status"} <= set(component)
        assert component["summary"] and component["status"] in ("ok", "unavailable")
    assert components[("dataset", "cub")]["plugin"] == "xaikit-datasets"
    assert [p["name"] for p in payload["plugins"]] == builtin_plugins
    assert {("backbone", "demo-vit"), ("backbone", "dinov2"), ("backbone", "timm"), ("backbone", "open_clip")} <= set(components)


def test_plugins_table_and_list(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "xaikit-datasets" in out and "synthetic-birds" in out
    assert main(["list", "datasets", "syn*"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-birds" in out and "cub" not in out
    assert main(["list", "dataset", "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["cub", "synthetic-birds"]
    assert main(["list", "segmenters", "nothing*"]) == 0
    assert "no segmenters match" in capsys.readouterr().out


def test_info_shows_documentation_and_options(capsys):
    assert main(["info", "dataset", "cub"]) == 0
    out = capsys.readouterr().out
    assert "dataset cub" in out and "crop_to_bbox=False" in out and "root=required" in out


def test_info_with_one_word_names_the_command_meant(capsys):
    assert main(["info", "vlpart"]) == 2
    assert one_line(capsys.readouterr().err) == "error: xaikit info takes KIND NAME; 'vlpart' is a segmenter: xaikit info segmenter vlpart"
    assert main(["info", "matchers"]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: xaikit info matcher needs the component's NAME, one of: cosine, mnn")
    assert main(["info", "nosuch"]) == 2
    assert "unknown kind 'nosuch'" in one_line(capsys.readouterr().err)


def test_unknown_kind_is_one_line_and_exit_2(capsys):
    assert main(["list", "segmentr"]) == 2
    assert one_line(capsys.readouterr().err) == "error: unknown kind 'segmentr'; did you mean 'segmenter'?"


def test_usage_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", "x", "--classes", "many"])
    assert exit_info.value.code == 2
    assert "argument --classes: 'many' is not a whole number" in one_line(capsys.readouterr().err)


def test_unknown_segmenter_suggests_the_close_name():
    result = run("info", "segmenter", "clipsge")
    assert result.returncode == 2
    assert one_line(result.stderr) == "error: unknown segmenter 'clipsge'; did you mean 'clipseg'?"
    assert result.stdout == ""


def test_a_plugin_that_raises_on_import_shows_as_error_and_nothing_else_breaks(plugin_dist, tmp_path):
    site = plugin_dist("broken-plugin", "broken_plugin", "raise ImportError('needs a library that is gone')", entry_name="broken")
    env = {"PYTHONPATH": str(site), "XAIKIT_DISABLE_PLUGIN_AUTOLOAD": ""}
    result = run("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["broken"]["status"] == "error"
    assert "ImportError: needs a library that is gone" in plugins["broken"]["error"]
    assert plugins["broken"]["distribution"] == "broken-plugin"
    assert plugins["xaikit-datasets"]["status"] == "ok"
    table = run("plugins", env=env)
    assert table.returncode == 0 and "broken" in table.stdout and "error" in table.stdout
    listing = run("list", "datasets", env=env)
    assert listing.returncode == 0 and "synthetic-birds" in listing.stdout
    synth = run("data", "synth", "--out", str(tmp_path / "s"), "--classes", "2", "--per-class", "2", env=env)
    assert synth.returncode == 0, synth.stderr


def test_internal_errors_are_one_line_unless_debug(monkeypatch, capsys):
    import xaikit.cli.plugins as plugins_cli

    def explode(args):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(plugins_cli, "run_plugins", explode)
    assert main(["plugins"]) == 1
    assert one_line(capsys.readouterr().err) == (
        "error: internal error: RuntimeError: something unexpected (rerun with --debug for the traceback)"
    )
    assert main(["plugins", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "something unexpected" in err


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_synth_writes_a_cub_layout_deterministically(tmp_path, capsys):
    args = ["data", "synth", "--classes", "5", "--per-class", "4", "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "wrote 20 images of 5 species (10 train, 10 test)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert first == second and len(first) > 20 * 3

    from xaikit.data.cub import CUBDataset

    dataset = CUBDataset(tmp_path / "a")
    assert len(dataset) == 20 and len(dataset.classes) == 5
    sample = dataset[0]
    assert sample.part_mask is not None and sample.foreground is not None


def test_data_synth_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(tmp_path / "taken"), "--classes", "2", "--per-class", "2"]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("error: ") and "taken" in err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_data_check_reports_a_malformed_row_with_file_and_line(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--classes", "2", "--per-class", "2"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "s"), "--decode"]) == 0
    assert "4 images (2 train, 2 test), 2 classes, 15 parts, every image decodes" in capsys.readouterr().out
    labels = tmp_path / "s" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("3 2\n", "3 two\n"))
    assert main(["data", "check", str(tmp_path / "s")]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {labels}, line 3: expected '<image_id> <class_id>', got '3 two'"
    )


def test_data_check_on_real_photographs(cub_mini, capsys):
    assert main(["data", "check", str(cub_mini), "--decode"]) == 0
    assert "60 images (30 train, 30 test), 200 classes, 15 parts, every image decodes" in capsys.readouterr().out


def test_file_system_errors_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["data", "check", str(blocker / "inside")]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: CUB root ")
    assert main(["data", "synth", "--out", str(blocker / "inside"), "--classes", "2", "--per-class", "2"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "internal error" not in err and str(blocker) in err



def _bird_file(tmp_path: Path) -> Path:
    from PIL import Image

    image = tmp_path / "bird.png"
    Image.new("RGB", (48, 32), (90, 140, 60)).save(image)
    return image


def test_explain_an_image_file_with_the_annotations_segmenter_names_a_pixel_segmenter(tiny_birds, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["explain", str(_bird_file(tmp_path)), "--data-root", str(tiny_birds), "--out", str(out)]) == 2
    error = one_line(capsys.readouterr().err)
    assert "image file without part annotations" in error and "pass a segmenter that reads pixels, e.g. --segmenter dino-parts" in error
    assert not out.exists()


def test_explain_reads_the_training_images_whole_beside_an_image_file(tiny_birds, tmp_path, monkeypatch):
    import xaikit.bench.runner
    from xaikit.errors import XaikitError

    built = []

    def stop(config, registry):
        built.append(config.options.get("dataset", {}))
        raise XaikitError("stopped after building the configuration")

    monkeypatch.setattr(xaikit.bench.runner, "build_run", stop)
    base = ["--data-root", str(tiny_birds), "--segmenter", "dino-parts", "--out", str(tmp_path / "fig.png")]
    assert main(["explain", str(_bird_file(tmp_path)), *base]) == 2
    assert main(["explain", str(_bird_file(tmp_path)), *base, "--option", "dataset.crop_to_bbox=true"]) == 2
    assert main(["explain", "3", *base]) == 2
    assert built[0] == {"crop_to_bbox": False}  # a file has no box: the prototypes are drawn whole like it
    assert built[1] == {"crop_to_bbox": "true"}  # the user's choice stands
    assert built[2] == {}  # a dataset image is drawn as the dataset gives it, like its prototypes


def test_explain_loads_an_ivpt_checkpoint_and_names_its_concepts_by_parts(tiny_birds, tmp_path, capsys):
    run_dir = tmp_path / "run"
    tiny = ["--data-root", str(tiny_birds), "--device", "cpu"]
    assert main(["train", *tiny, "--epochs", "1", "--option", "prototypes=[5,4,3]", "--batch-size", "8", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    out = tmp_path / "ivpt.png"
    explain = ["explain", "3", "--explainer", "ivpt", *tiny, "--option", f"checkpoint={run_dir}", "--out", str(out), "--json"]
    assert main([*explain, "--option", "concept_names=parts"]) == 0
    captured = capsys.readouterr()
    assert f"loading ivpt from {run_dir}, then naming its concepts after the parts they hit" in captured.err
    assert "fitting" not in captured.err and out.exists()
    detail = json.loads(captured.out[: captured.out.rindex("}") + 1])
    parts = {"back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"}
    for concept in detail["concepts"]:
        assert concept["name"].rstrip(" 0123456789") in parts or concept["name"].startswith("concept ")
    assert main(explain) == 0
    assert "loading ivpt from" in capsys.readouterr().err
