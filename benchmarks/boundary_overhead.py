"""What checking plugin outputs costs: ``xaikit.boundary``'s rules against the calls whose output they check, in one run.

Usage::

    python benchmarks/boundary_overhead.py [--images 32] [--repeats 5] [--out-json benchmarks/results/boundary_overhead.json]

On ``--images`` synthetic-birds test images (cropped, the default), with the default KLC pipeline
(``demo-vit``, ``annotations``, ``mnn``), it times, fastest of ``--repeats``:

- ``segment``: the annotations segmenter (no model: the worst case for the ratio) on the images, and
  ``part_map_problem`` on its maps; ``segment_dino_parts``: the same with ``dino-parts`` (a ViT);
- ``explain``: KLC's explanation of the images, and ``explanation_problem`` on it;
- ``match``: mnn on 60 x 300 descriptors of 768 dimensions (KLC's pool at CUB scale), and ``match_problem``.

Each ratio is the check's time over the call's: the share that guarding adds to that call.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time
from collections.abc import Callable

import torch

import xaikit
from xaikit.boundary import explanation_problem, match_problem, part_map_problem


def fastest(function: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="test images per call (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side (default 5)")
    parser.add_argument("--out-json", type=pathlib.Path, default=pathlib.Path("benchmarks/results/boundary_overhead.json"))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    train = xaikit.create("dataset", "synthetic-birds", split="train")
    test = xaikit.create("dataset", "synthetic-birds", split="test")
    samples = [test[index] for index in range(args.images)]
    segmenter = xaikit.create("segmenter", "annotations")
    klc = xaikit.create("explainer", "klc", device="cpu").fit(train)
    dino_parts = xaikit.create("segmenter", "dino-parts", device="cpu")
    matcher = xaikit.create("matcher", "mnn")
    query, candidates = torch.randn(60, 768), torch.randn(300, 768)

    maps, explanation, match = segmenter.segment(samples), klc.explain(samples), matcher.match(query, candidates)
    dino_maps = dino_parts.segment(samples)
    seconds = {
        "segment": fastest(lambda: segmenter.segment(samples), args.repeats),
        "segment_check": fastest(lambda: [part_map_problem(m, s) for m, s in zip(maps, samples, strict=True)], args.repeats),
        "segment_dino_parts": fastest(lambda: dino_parts.segment(samples), args.repeats),
        "segment_dino_parts_check": fastest(lambda: [part_map_problem(m, s) for m, s in zip(dino_maps, samples, strict=True)], args.repeats),
        "explain": fastest(lambda: klc.explain(samples), args.repeats),
        "explain_check": fastest(lambda: explanation_problem(explanation, len(samples)), args.repeats),
        "match": fastest(lambda: matcher.match(query, candidates), args.repeats),
        "match_check": fastest(lambda: match_problem(match, len(query), len(candidates)), args.repeats),
    }
    result = {
        "benchmark": "boundary_overhead",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch_threads": 1},
        "images": args.images,
        "repeats": args.repeats,
        "seconds": {name: round(value, 6) for name, value in seconds.items()},
        "check_over_call": {name: round(seconds[f"{name}_check"] / seconds[name], 4) for name in ("segment", "segment_dino_parts", "explain", "match")},
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
