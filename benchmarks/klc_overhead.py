"""KLC's cost per image against a bare backbone forward pass, and the disk cache per gallery image.

Usage::

    python benchmarks/klc_overhead.py [--backbone demo-vit] [--option KEY=VALUE ...] [--segmenter annotations]
        [--images 64] [--batch-size 32] [--device auto] [--out-json benchmarks/results/klc_overhead.json]

In one run, on the same synthetic-birds test images (decoded beforehand, feature cache off):

* ``forward``: the backbone alone, preprocessing included (``backbone(images)`` in batches);
* ``klc``: ``KLC.explain`` on the same images and batches, which runs that forward pass itself and
  adds retrieval, segmentation, part pooling, matching and voting.

The figure is ``klc / forward`` per image, and ``overhead = klc / forward - 1`` (the target: at most
1.0, i.e. KLC at most doubles the cost of the forward pass). The gallery is then fitted again into
an empty cache directory to measure the bytes the feature cache and the gallery-parts cache hold
per prototype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import xaikit
from xaikit.cli.options import parse_options


def interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Best wall time of each function over ``repeats`` alternating calls, after one warm-up call each.

    Alternating keeps both measurements under the same machine load.
    """
    first(), second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for slot, function in enumerate((first, second)):
            start = time.perf_counter()
            function()
            best[slot] = min(best[slot], time.perf_counter() - start)
    return best[0], best[1]


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="demo-vit")
    parser.add_argument("--option", action="append", default=[], help="backbone option KEY=VALUE, repeatable")
    parser.add_argument("--segmenter", default="annotations")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-json", type=Path, default=Path(__file__).parent / "results" / "klc_overhead.json")
    args = parser.parse_args()

    dataset = xaikit.create("dataset", "synthetic-birds")
    train, test = dataset.split("train"), dataset.split("test")
    samples = [test[index] for index in range(min(args.images, len(test)))]
    backbone = xaikit.create("backbone", args.backbone, device=args.device, **parse_options(args.option))
    klc = xaikit.create("explainer", "klc", backbone=backbone, segmenter=args.segmenter, cache=False, batch_size=args.batch_size).fit(train)
    batches = [samples[start : start + args.batch_size] for start in range(0, len(samples), args.batch_size)]

    def forward() -> None:
        for batch in batches:
            backbone([sample.image for sample in batch])
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()

    def explain() -> None:
        for batch in batches:
            klc.explain(batch)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()

    forward_total, klc_total = interleaved(forward, explain, args.repeats)
    forward_s, klc_s = forward_total / len(samples), klc_total / len(samples)

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["XAIKIT_CACHE_DIR"] = scratch
        cached = xaikit.create("explainer", "klc", backbone=backbone, segmenter=args.segmenter, prototype_selection="first").fit(train)
        prototypes = len(cached.index)
        feature_bytes = directory_bytes(Path(scratch) / "features") / prototypes
        parts_bytes = directory_bytes(Path(scratch) / "klc-gallery") / prototypes

    result = {
        "command": "python benchmarks/klc_overhead.py " + " ".join(
            [f"--backbone {args.backbone}", *(f"--option {o}" for o in args.option), f"--segmenter {args.segmenter}",
             f"--images {args.images}", f"--batch-size {args.batch_size}", f"--device {args.device}"]
        ),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(backbone.device)},
        "images": len(samples),
        "input": list(backbone.preprocessing.size),
        "forward_ms_per_image": round(1000 * forward_s, 3),
        "klc_ms_per_image": round(1000 * klc_s, 3),
        "klc_over_forward": round(klc_s / forward_s, 3),
        "overhead": round(klc_s / forward_s - 1, 3),
        "overhead_target": 1.0,
        "prototypes": prototypes,
        "feature_cache_bytes_per_prototype": round(feature_bytes),
        "gallery_parts_cache_bytes_per_prototype": round(parts_bytes),
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
