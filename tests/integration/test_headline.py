"""The headline commands on real CUB photographs: ``xaikit bench`` and ``xaikit explain`` with KLC over VLPart and SAN."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

PARTS = "bird beak,bird head,bird eye,bird leg,bird foot,bird wing,bird neck,bird tail,bird torso"
NOISE = re.compile(r"Freezing|Warning|warnings\.warn|WARNING|W\d{4} |yaml\.unsafe_load|Loading config|Traceback")
"""What third-party code prints (module dumps, warnings, log records); none of it may reach the terminal."""


def xaikit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("xaikit")), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def vlpart_embeddings(seeded_helpers, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random unit ``(9, 1024)`` text embeddings: every detection is a bird part, so maps and matches are not empty."""
    return seeded_helpers.random_text_embeddings(tmp_path_factory.mktemp("vocabulary") / "bird9.npy", len(PARTS.split(",")))


def run_headline(segmenter: str, options: list[str], cub_mini: Path, tmp_path: Path) -> None:
    common = ["--dataset", "cub", "--data-root", str(cub_mini), "--segmenter", segmenter, "--explainer", "klc", "--device", "cpu",
              "--option", "prototypes_per_class=1", *[arg for option in options for arg in ("--option", option)]]
    run = tmp_path / "run"
    bench = xaikit("bench", *common, "--limit", "3", "--out", str(run), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    lines = (run / "items.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("prediction" in json.loads(line) for line in lines)
    assert not NOISE.search(bench.stdout + bench.stderr), bench.stdout + bench.stderr
    assert NOISE.search((run / "third-party.log").read_text())  # kept, in the run directory
    image = json.loads(lines[0])["image_id"]
    figure = tmp_path / "figure.png"
    explain = xaikit("explain", str(image), *common, "--out", str(figure), cwd=tmp_path)
    assert explain.returncode == 0, explain.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not NOISE.search(explain.stdout + explain.stderr), explain.stdout + explain.stderr


def test_klc_with_vlpart(vlpart_source, vlpart_weights, vlpart_embeddings, cub_mini, tmp_path):
    run_headline("vlpart", [
        f"segmenter.source={vlpart_source}", f"segmenter.weights={vlpart_weights}", "segmenter.score_threshold=0",
        f"segmenter.vocabulary={PARTS}", f"segmenter.embeddings={vlpart_embeddings}", "segmenter.min_size_test=128",
    ], cub_mini, tmp_path)


def test_klc_with_san(san_source, san_weights, cub_mini, tmp_path):
    run_headline("san", [
        f"segmenter.source={san_source}", f"segmenter.weights={san_weights}", "segmenter.vocabulary=bird head,bird wing,bird tail",
        "segmenter.augment=none", "segmenter.min_size_test=160",
    ], cub_mini, tmp_path)
