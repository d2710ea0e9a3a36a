"""``xaikit compare`` on 7 synthetic runs of 200 images: issue 18's target is under 2 s.

Usage::

    python benchmarks/compare_speed.py [--runs 7] [--images 200] [--classes 10] [--repeats 3]
        [--out-json benchmarks/results/compare_speed.json]

It writes ``--runs`` run directories directly, as ``xaikit bench`` lays them out: ``config.json`` (the
runs differ in KLC's ``k``), ``items.jsonl`` with the details KLC writes on synthetic birds (``k``
prototypes, the query's and each prototype's 15 parts with keypoints, matches; about 4.6 kB a line, as
in the README's runs), class names as long as synthetic-birds' (``001.White_crowned_..._Hookbill``), and ``summary.json`` scored by the ``accuracy`` metric with the benchmark's own
1000-resample bootstrap interval. Each run gets every image right with its own probability, so the
pairs have discordant images. It then times the whole command ``python -m xaikit compare RUN ... --out
DIR`` in a fresh process (interpreter start, imports, reading, 21 paired tests, plots, writing), best of
``--repeats``, beside a bare ``python -c "import numpy, matplotlib.figure"``, the imports the command
cannot avoid (it imports no torch), and prints the machine's load average, which inflates both on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
         "right eye", "right leg", "right wing", "tail", "throat")


def write_run(
    path: Path, labels: Sequence[int], correct: Sequence[bool], *, image_ids: Sequence[int] | None = None,
    classes: int | None = None, k: int = 3, seed: int = 31, skipped: Sequence[int] = (), names: Sequence[str] | None = None,
) -> None:
    """Write a finished synthetic run to ``path``, with the files and fields ``xaikit bench`` writes.

    Args:
        labels: each evaluated image's class.
        correct: whether the run classifies it correctly (a wrong prediction is the next class).
        image_ids: each image's id (default ``0..N-1``).
        classes: how many classes (default ``max(labels) + 1``, at least 2).
        k: KLC's ``k``, recorded in the configuration (so runs differ there).
        seed: the run's seed (its bootstrap's too).
        skipped: indices of extra test images recorded as skipped.
        names: the class names (default ``species 0``, ``species 1``, ...).
    """
    import xaikit
    from xaikit.bench.uncertainty import bootstrap_interval

    count = max(2, max(labels) + 1) if classes is None else classes
    label = torch.tensor(labels, dtype=torch.int64)
    prediction = torch.where(torch.tensor(correct, dtype=torch.bool), label, (label + 1) % count)
    scores = torch.nn.functional.one_hot(prediction, count).float() * 0.9 + 0.1 / count
    ids = range(len(labels)) if image_ids is None else image_ids
    names = [f"species {number}" for number in range(count)] if names is None else list(names)
    path.mkdir(parents=True)
    config = {
        "dataset": "synthetic-birds", "data_root": None, "explainer": "klc", "metrics": ["accuracy"], "k": k, "limit": None,
        "seed": seed, "batch_size": 32, "strict": False, "bootstrap": 1000, "device": "cpu", "device_requested": "auto",
        "components": {"explainer": {"name": "klc", "options": {"k": k, "label_agreement": True}}, "backbone": {"name": "demo-vit", "options": {}}},
        "versions": {"xaikit": xaikit.__version__, "python": platform.python_version()},
        "timing": [{"started": "2025-01-01T00:00:00", "build_s": 1.0, "fit_s": 1.0, "explain_s": 1.0, "score_s": 0.1}],
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    records = [
        {
            "index": index, "image_id": int(image), "path": f"images/{image}.jpg", "label": int(truth), "class": names[truth],
            "prediction": int(guess), "predicted_class": names[guess], "correct": bool(truth == guess),
            "scores": [round(float(value), 6) for value in row], "details": _details(index, k),
        }
        for index, (image, truth, guess, row) in enumerate(zip(ids, label.tolist(), prediction.tolist(), scores))
    ]
    records += [{"index": len(labels) + number, "status": "skipped", "reason": "the image is truncated"} for number in range(len(skipped))]
    (path / "items.jsonl").write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
    accuracy = xaikit.create("metric", "accuracy")
    result = accuracy.score(label, scores)
    summary = {
        "images": len(records), "evaluated": len(labels), "skipped": [{"index": r["index"], "reason": r["reason"]} for r in records[len(labels):]],
        "metrics": {"accuracy": {
            "value": result.value, "higher_is_better": True, "details": dict(result.details),
            "interval": bootstrap_interval(accuracy, label, scores, resamples=1000, seed=seed),
        }},
    }
    (path / "summary.json").write_text(json.dumps(summary, indent=2))


def _details(index: int, k: int) -> dict[str, Any]:
    """The details KLC writes: ``k`` prototypes, the query's and each prototype's parts with keypoints, matches."""
    def parts(shift: int) -> list[dict[str, Any]]:
        return [{"keypoint": [round(37.5 + 5.3 * p + shift, 2), round(21.7 + 3.1 * p, 2)], "label": p + 1, "name": name} for p, name in enumerate(PARTS)]

    return {
        "fallback": False, "label": 0, "prediction": 0, "rejected_matches": 2,
        "prototypes": [{"dataset_index": index + j, "gallery_index": j, "image_id": index + j + 1, "label": 0, "similarity": 0.941149} for j in range(k)],
        "query_parts": parts(0)[:10],
        "prototype_parts": [parts(j + 1) for j in range(k)],
        "matches": [{"part": name, "prototype": 1, "prototype_part": p, "prototype_part_name": name, "query_part": p, "similarity": 0.968817}
                    for p, name in enumerate(PARTS[:5])],
    }


def synthetic_runs(root: Path, runs: int, images: int, classes: int) -> list[Path]:
    """``runs`` runs of the same ``images`` images, run ``r`` right on each image with probability ``0.75 + 0.03 r``."""
    generator = torch.Generator().manual_seed(0)
    labels = (torch.arange(images) % classes).tolist()
    names = [f"{number + 1:03d}.White_crowned_Orange_throated_Green_winged_Fan_tailed_Hookbill" for number in range(classes)]
    paths = []
    for run in range(runs):
        correct = (torch.rand(images, generator=generator) < 0.75 + 0.03 * run).tolist()
        paths.append(root / f"k{run + 1}")
        write_run(paths[-1], labels, correct, classes=classes, k=run + 1, names=names)
    return paths


def _best_wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-json", type=Path, default=Path(__file__).parent / "results" / "compare_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        paths = synthetic_runs(Path(directory) / "runs", args.runs, args.images, args.classes)
        out = Path(directory) / "report"
        compare = _best_wall([sys.executable, "-m", "xaikit", "compare", *map(str, paths), "--out", str(out)], args.repeats)
        imports = _best_wall([sys.executable, "-c", "import numpy, matplotlib.figure"], args.repeats)
        files = sorted(entry.name for entry in out.iterdir())
    result = {
        "runs": args.runs, "images": args.images, "classes": args.classes, "repeats": args.repeats,
        "compare_s": round(compare, 3), "imports_s": round(imports, 3), "compare_minus_imports_s": round(compare - imports, 3),
        "target_s": 2.0, "load_average": [round(value, 2) for value in os.getloadavg()], "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "files": files,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"xaikit compare, {args.runs} runs of {args.images} images: {compare:.2f} s wall (best of {args.repeats}), "
          f"of which {imports:.2f} s is importing numpy and matplotlib; target < 2 s; load average {result['load_average']}")


if __name__ == "__main__":
    main()
