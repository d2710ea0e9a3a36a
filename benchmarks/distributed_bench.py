"""``torchrun --nproc_per_node N -m xaikit bench`` against one process: wall time of the same run.

Usage::

    python benchmarks/distributed_bench.py [--processes 2] [--images 200] [--backbone timm:vit_small_patch14_dinov2]
        [--option pretrained=false --option image_size=224 --option resize=squash] [--repeats 1]
        [--out-json benchmarks/results/distributed_bench.json]

In one run, on synthetic-birds test images with KLC (``annotations`` parts), a random-weight ViT-S/14
at 224 px by default (large enough that the backbone dominates):

1. A scratch ``xaikit bench --limit 1`` fills a cache with the gallery (prototype features and parts),
   so that every timed run fits from the cache and spends its time explaining, which is the part that
   is shared out between processes.
2. Each timed run gets its own copy of that cache (its test images are cold) and runs as a fresh
   command, start-up included:

   * ``one``: one process with one thread (``OMP_NUM_THREADS=1``, what each ``torchrun`` process gets);
   * ``one_all_threads``: one process with torch's default threads (every core);
   * ``torchrun``: ``N`` processes of one thread each.

The figure is ``explain_torchrun_over_one`` (target < 0.6 with 2 processes): the evaluation phase
(``explain_s`` of ``config.json``'s ``timing``) of the sharded run over one process with as many threads
per process, the scaling a multi-GPU node sees with one GPU per process. The whole commands' ratio
``torchrun_over_one`` is reported beside it, start-up (Python, torch, ``torchrun``'s own launcher),
building and fitting included, which do not shrink with more processes; so is
``torchrun_over_one_all_threads``: on a CPU, intra-op threads already use the cores, so processes
gain only what threading loses.
``torchrun``'s ``items.jsonl`` and ``summary.json`` are checked byte-equal to ``one``'s (same threads per
process). ``one_all_threads`` sums in another order on 2 threads, so its records are compared by
prediction and largest score difference instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def xaikit_command(processes: int) -> list[str]:
    """How to start ``xaikit`` in ``processes`` processes (``torchrun`` for more than one)."""
    if processes == 1:
        return [sys.executable, "-m", "xaikit"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "xaikit"]


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``command``; its output is kept only when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def outputs(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("items.jsonl", "summary.json")}


def agreement_with(reference: Path, run: Path) -> dict[str, float]:
    """How far ``run``'s records are from ``reference``'s: share of equal predictions, largest score difference."""
    first, second = ([json.loads(line) for line in (path / "items.jsonl").read_text().splitlines()] for path in (reference, run))
    same = sum(a["prediction"] == b["prediction"] for a, b in zip(first, second, strict=True))
    largest = max(abs(x - y) for a, b in zip(first, second) for x, y in zip(a["scores"], b["scores"], strict=True))
    return {"same_prediction": round(same / len(first), 4), "largest_score_difference": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images", type=int, default=200, help="test images per run (--limit)")
    parser.add_argument("--backbone", default="timm:vit_small_patch14_dinov2")
    parser.add_argument("--option", action="append", default=None, help="backbone option KEY=VALUE, repeatable")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each kind, the best kept")
    parser.add_argument("--out-json", type=Path, default=Path(__file__).parent / "results" / "distributed_bench.json")
    args = parser.parse_args()
    options = args.option if args.option is not None else ["pretrained=false", "image_size=224", "resize=squash"]
    components = ["bench", "--backbone", args.backbone, *(f"--option=backbone.{option}" for option in options), "--device", "cpu"]
    bench = [*components, "--limit", str(args.images), "--batch-size", str(args.batch_size), "--bootstrap", "0"]
    kinds = {"one": (1, {"OMP_NUM_THREADS": "1"}), "one_all_threads": (1, {}), "torchrun": (args.processes, {"OMP_NUM_THREADS": "1"})}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        components += ["--data-root", str(root / "birds")]  # generated once by the warm-up, outside the caches copied per run
        bench += ["--data-root", str(root / "birds")]
        base = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        warm = {**base, "XAIKIT_CACHE_DIR": str(root / "warm"), "HF_HUB_OFFLINE": "1"}
        timed([*xaikit_command(1), *components, "--limit", "1", "--seed", "1", "--out", str(root / "warm-up")], warm)
        best: dict[str, float] = {}
        agreement: dict[str, float] = {}
        phases: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for kind, (processes, threads) in kinds.items():  # alternating keeps the kinds under the same load
                cache, run = root / f"cache-{kind}-{repeat}", root / f"run-{kind}-{repeat}"
                shutil.copytree(root / "warm", cache)
                env = {**base, **threads, "XAIKIT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
                seconds = timed([*xaikit_command(processes), *bench, "--out", str(run)], env)
                if seconds < best.get(kind, float("inf")):
                    best[kind] = seconds
                    phases[kind] = json.loads((run / "config.json").read_text())["timing"][-1]
                if kind == "one_all_threads":  # other threads sum in another order: compare the decisions
                    agreement = agreement_with(root / f"run-one-{repeat}", run)
                elif outputs(run) != outputs(root / f"run-one-{repeat}"):
                    raise SystemExit(f"{kind} wrote other items.jsonl or summary.json than one process with as many threads")
                shutil.rmtree(cache)
    result = {
        "command": "python benchmarks/distributed_bench.py " + " ".join(
            [f"--processes {args.processes}", f"--images {args.images}", f"--backbone {args.backbone}",
             *(f"--option {option}" for option in options), f"--batch-size {args.batch_size}", f"--repeats {args.repeats}"]
        ),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "cores": os.cpu_count(), "default_threads": torch.get_num_threads(),
                    "load_average": [round(value, 2) for value in os.getloadavg()]},
        "images": args.images,
        "wall_s": {kind: round(seconds, 2) for kind, seconds in best.items()},
        "phases_s": {kind: {key: value for key, value in timing.items() if key.endswith("_s")} for kind, timing in phases.items()},
        "explain_torchrun_over_one": round(phases["torchrun"]["explain_s"] / phases["one"]["explain_s"], 3),
        "target": 0.6,
        "torchrun_over_one": round(best["torchrun"] / best["one"], 3),
        "torchrun_over_one_all_threads": round(best["torchrun"] / best["one_all_threads"], 3),
        "torchrun_identical_to_one": True,
        "one_all_threads_vs_one": agreement,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
