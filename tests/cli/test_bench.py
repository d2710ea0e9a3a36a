"""``xaikit bench`` and ``xaikit explain`` on the command line: the default run, refusals, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xaikit.cli import main


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_bench_with_no_arguments_runs_the_embedded_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("synthetic-birds-klc-")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images"] == 200 and summary["metrics"]["accuracy"]["value"] >= 90  # measured 98.0
    config = json.loads((run / "config.json").read_text())
    assert [config["components"][kind]["name"] for kind in ("dataset", "backbone", "segmenter", "matcher", "explainer")] == [
        "synthetic-birds", "demo-vit", "annotations", "mnn", "klc"
    ]
    out = capsys.readouterr().out
    assert "accuracy" in out and "wrote" in out


def test_bench_refuses_to_overwrite_and_to_resume_another_run(tiny_birds, tmp_path, capsys):
    base = ["bench", "--data-root", str(tiny_birds), "--limit", "4", "--out", str(tmp_path / "run")]
    assert main(base) == 0
    assert main(base) == 2
    assert "already holds a run; pass --resume" in last_error(capsys)
    assert main([*base, "--resume", "--k", "2"]) == 2
    assert "it was started with" in last_error(capsys)
    assert main([*base, "--resume"]) == 0
    assert main([*base, "--overwrite", "--k", "2"]) == 0


def test_bench_on_real_cub_photographs(cub_mini, tmp_path):
    out = tmp_path / "cub"
    arguments = ["bench", "--dataset", "cub", "--data-root", str(cub_mini), "--backbone", "demo-vit", "--segmenter", "annotations", "--explainer", "klc"]
    assert main([*arguments, "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "items.jsonl", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["evaluated"] == 30


def test_bench_errors_are_one_sentence(tiny_birds, tmp_path, capsys):
    assert main(["bench", "--data-root", str(tiny_birds), "--segmenter", "anotations", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean 'annotations'?" in last_error(capsys)
    assert main(["bench", "--data-root", str(tiny_birds), "--option", "segmentr.radius=1", "--out", str(tmp_path / "b")]) == 2
    assert "names no component" in last_error(capsys)
    assert main(["bench", "--dataset", "cub", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_explain_a_dataset_image_by_id(tiny_birds, tmp_path, capsys):
    from xaikit import CUBDataset

    image_id = int(CUBDataset(tiny_birds, split="test").image_ids[0])
    out = tmp_path / "figures" / "fig.png"
    assert main(["explain", str(image_id), "--data-root", str(tiny_birds), "--out", str(out), "--json"]) == 0
    figure = np.asarray(Image.open(out))
    assert figure.ndim == 3 and figure.shape[0] > 3 * 280  # the query beside each of the 3 prototypes, one row each
    captured = capsys.readouterr()
    assert "predicted" in captured.out and f"created the folder {out.parent}" in " ".join(captured.err.split())
    assert main(["explain", str(image_id), "--data-root", str(tiny_birds), "--out", str(tmp_path / "fig.pdf")]) == 0
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")


def test_explain_an_image_file_with_a_pixel_segmenter(tiny_birds, tmp_path):
    from xaikit import CUBDataset

    path = CUBDataset(tiny_birds, split="test")[0].path
    out = tmp_path / "fig.png"
    assert main(["explain", str(path), "--data-root", str(tiny_birds), "--segmenter", "dino-parts", "--out", str(out)]) == 0
    assert out.exists()


def test_explain_refusals(tiny_birds, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    assert main(["explain", str(broken), "--data-root", str(tiny_birds), "--out", str(tmp_path / "x.png")]) == 2
    assert "cannot decode image" in last_error(capsys)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    assert main(["explain", str(good), "--data-root", str(tiny_birds), "--out", str(tmp_path / "y.png")]) == 2
    assert "needs an annotated dataset image" in last_error(capsys)
    assert main(["explain", "999999", "--data-root", str(tiny_birds), "--out", str(tmp_path / "z.png")]) == 2
    assert "no image with id 999999" in last_error(capsys)
    with pytest.raises(SystemExit) as exit_code:
        main(["explain", "1", "--data-root", str(tiny_birds), "--out", str(tmp_path / "figure.txt")])
    assert exit_code.value.code == 2 and "'figure.txt' does not end in .png, .jpg, .jpeg, .pdf" in last_error(capsys).replace(str(tmp_path) + "/", "")
    assert not any(Path(tmp_path).glob("[xyz].png")) and not (tmp_path / "figure.txt").exists()
