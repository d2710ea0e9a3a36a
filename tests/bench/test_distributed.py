"""``torchrun -m xaikit bench`` and ``xaikit features`` with 2 CPU processes (gloo): the same run as one process.

Every test starts real ``torchrun`` processes; the one-process runs go through the same runner in
this process, sharing the test's feature cache (float16 entries read back bit-identically).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xaikit.bench import BenchConfig, run_bench
from xaikit.cli import main

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="torch.distributed with gloo is not available"
)

SAMPLE = ["--limit", "13", "--seed", "4", "--batch-size", "3", "--device", "cpu"]


def torchrun(processes: int, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``xaikit ARGUMENTS`` under ``torchrun --standalone --nproc_per_node PROCESSES``."""
    # As many threads as this process: on a CPU, torch's sums depend on the number of threads.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "xaikit", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def one_process(root: Path, out: Path, **changes) -> None:
    config = BenchConfig(
        dataset="synthetic-birds", data_root=str(root), limit=13, seed=4, batch_size=3, device="cpu",
        **changes,
    )
    run_bench(config, out, resume=(out / "config.json").exists())


def run_files(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("items.jsonl", "summary.json")}


def timing(run: Path) -> list[dict]:
    return json.loads((run / "config.json").read_text())["timing"]


@pytest.fixture(scope="module")
def reference(tiny_birds, tmp_path_factory) -> Path:
    """The one-process run every test compares with (13 of the 16 test images, batches of 3: 5 batches)."""
    out = tmp_path_factory.mktemp("one") / "run"
    one_process(tiny_birds, out)
    return out


def test_two_processes_write_the_items_and_summary_of_one(tiny_birds, reference, tmp_path):
    result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, "--out", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_files(tmp_path / "two") == run_files(reference)
    assert sorted(path.name for path in (tmp_path / "two").iterdir()) == ["config.json", "items.jsonl", "summary.json"]
    assert timing(tmp_path / "two")[0]["processes"] == 2 and timing(tmp_path / "two")[0]["images_explained"] == 13
    assert result.stdout.count("95% interval") == 1, "process 0 reports for both"
    assert "explaining 13 images with 2 processes" in result.stderr


def interrupted(reference: Path, run: Path) -> None:
    """``run``: what a 3-process run killed mid-way leaves: records out of order over items.jsonl and two shards, one torn."""
    run.mkdir()
    (run / "config.json").write_bytes((reference / "config.json").read_bytes())
    lines = (reference / "items.jsonl").read_text().splitlines(keepends=True)
    (run / "items.jsonl").write_text("".join(lines[6:9] + lines[0:3]))
    (run / "items.1.jsonl").write_text("".join(lines[3:6]))
    (run / "items.2.jsonl").write_text(lines[12] + lines[11][:40])  # killed while appending


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_run_resumes_with_another_number_of_processes(tiny_birds, reference, tmp_path, processes):
    interrupted(reference, tmp_path / "run")
    if processes == 1:
        one_process(tiny_birds, tmp_path / "run")
    else:
        result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, "--out", str(tmp_path / "run"), "--resume")
        assert result.returncode == 0, result.stderr[-3000:]
    assert run_files(tmp_path / "run") == run_files(reference)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["config.json", "items.jsonl", "summary.json"]
    assert timing(tmp_path / "run")[-1]["images_explained"] == 3  # lines 9, 10 and the torn 11 were missing


def test_a_refusal_of_process_0_stops_every_process_with_one_sentence(tiny_birds, reference, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert f"error: run directory {tmp_path / 'run'} holds notes.txt and no xaikit run" in result.stderr
    assert "error: process 0 stopped: run directory" in result.stderr
    assert 'xaikit/' not in result.stderr.replace(str(tmp_path), ""), "no traceback through xaikit (torchrun adds its own report)"
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["notes.txt"]


def test_features_are_shared_out_and_every_image_is_cached(tiny_birds, tmp_path, capsys):
    arguments = ["features", "--dataset", "cub", "--data-root", str(tiny_birds), "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    result = torchrun(2, *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "32 images through demo-vit on cpu and 1 more processes" in result.stdout
    assert result.stdout.count("images through") == 1
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 32
    assert main(arguments) == 0  # one process now finds every entry
    assert "cls (32, 128), patches (32, 14, 14, 128)" in capsys.readouterr().out
    assert sorted((tmp_path / "cache").rglob("*.safetensors")) == entries


def test_an_explainer_that_trains_in_parallel_fits_in_every_process_at_once(tiny_birds, tmp_path):
    """IVPT without a checkpoint trains with DDP inside ``bench`` (``parallel_fit``); then a checkpoint loads in both."""
    ivpt = ["--explainer", "ivpt", "--option", "epochs=1", "--option", "train_batch_size=8", "--option", "prototypes=[5,4,3]"]
    result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, *ivpt, "--out", str(tmp_path / "trained"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fitting ivpt on 16 training images in 2 processes" in result.stderr
    assert json.loads((tmp_path / "trained" / "summary.json").read_text())["evaluated"] == 13

    assert main(["train", "--data-root", str(tiny_birds), "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                 "--option", "prototypes=[5,4,3]", "--out", str(tmp_path / "checkpoint")]) == 0
    loaded = ["--explainer", "ivpt", "--option", f"checkpoint={tmp_path / 'checkpoint'}"]
    result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, *loaded, "--out", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["bench", "--data-root", str(tiny_birds), *SAMPLE, *loaded, "--out", str(tmp_path / "one")]) == 0
    assert run_files(tmp_path / "two") == run_files(tmp_path / "one")


def test_a_grid_under_torchrun_runs_each_configuration_sharded_and_reports_once(tiny_birds, reference, tmp_path):
    result = torchrun(2, "bench", "--data-root", str(tiny_birds), *SAMPLE, "--grid", "k=1,3", "--out", str(tmp_path / "grid"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote 2 runs and grid.json") == 1
    assert run_files(tmp_path / "grid" / "k=3") == run_files(reference)  # k = 3 is the default configuration
    assert sorted(path.name for path in (tmp_path / "grid" / "k=1").iterdir()) == ["config.json", "items.jsonl", "summary.json"]
    assert (tmp_path / "grid" / "comparison" / "comparison.html").is_file()
