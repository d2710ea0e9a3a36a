"""The benchmark runner: build components by name, fit, explain the test sample, score, write the run.

One run directory holds ``config.json`` (the resolved configuration and versions),
``items.jsonl`` (one line per test image: prediction, scores, matched parts, or why it was
skipped) and ``summary.json`` (the metrics). The summary is always computed from ``items.jsonl``
read back, so a run that was interrupted and resumed gives the same summary as one that was not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xaikit.bench.config import RESULT_KEYS, BenchConfig, environment, resolved_options
from xaikit.bench.progress import Progress
from xaikit.bench.rundir import RunDirectory, append_records, shard_path
from xaikit.bench.sampling import sample_indices
from xaikit.bench.uncertainty import OVER_UNITS, bootstrap_interval, mean_interval
from xaikit.data.subset import Subset
from xaikit.distributed import Distributed
from xaikit.errors import DatasetError, PluginError, UnknownOptionError, XaikitError
from xaikit.interfaces import Dataset, Explainer, Metric, PredictionMetric
from xaikit.registry import Registry
from xaikit.types import Explanation, MetricResult, Sample

__all__ = ["BenchResult", "Progress", "Run", "build_run", "run_bench"]

_SHARED_KINDS = ("backbone", "segmenter", "matcher")


@dataclass
class BenchResult:
    """What :func:`run_bench` returns.

    Attributes:
        path: the run directory.
        summary: the content of ``summary.json``.
        metrics: the metric results, in the order of :attr:`BenchConfig.metrics`.
    """

    path: Path
    summary: dict[str, Any]
    metrics: list[MetricResult]


@dataclass
class Run:
    """Everything built for a run.

    Attributes:
        train, test: the dataset's splits.
        explainer: the explainer (not yet fitted).
        metrics: the metrics, already checked against the explainer.
        components: the resolved name and options of every component, for ``config.json``.
        plugins: version of every plugin that provided a component.
    """

    train: Dataset
    test: Dataset
    explainer: Explainer
    metrics: list[Metric]
    components: dict[str, Any]
    plugins: dict[str, str | None]


def build_run(config: BenchConfig, registry: Registry) -> Run:
    """Create the dataset, shared components, explainer and metrics named by ``config``."""
    used: list[tuple[str, str]] = []
    record: dict[str, Any] = {}

    def create(kind: str, name: str, options: dict[str, Any], label: str | None = None) -> Any:
        used.append((kind, name))
        options = registry.coerce(kind, name, options)  # typed before config.json records them
        shown = {key: names.get(id(value), value) for key, value in options.items()}  # components by name
        record[label or kind] = {"name": name, "options": resolved_options(registry.factory(kind, name), shown)}
        component = registry.create(kind, name, **options)
        names[id(component)] = name
        return component

    names: dict[int, str] = {}

    dataset_options = dict(config.options.get("dataset", {}))
    if config.data_root is not None:
        dataset_options["root"] = config.data_root
    dataset = create("dataset", config.dataset, dataset_options)
    explainer_options = dict(config.options.get("explainer", {}))

    def accepts(option: str) -> bool:
        return registry.accepts("explainer", config.explainer, option)

    for key, value in (("k", config.k), ("device", config.device), ("batch_size", config.batch_size)):
        if key == "k" and value is not None and not accepts(key):
            raise UnknownOptionError(f"explainer '{config.explainer}' takes no k")
        if value is not None and accepts(key):
            explainer_options.setdefault(key, value)
    built: dict[str, Any] = {}
    for kind in _SHARED_KINDS:
        name = getattr(config, kind) or default_component_name(registry, config.explainer, kind)
        if not accepts(kind):
            if getattr(config, kind) is not None or kind in config.options:
                raise UnknownOptionError(f"explainer '{config.explainer}' takes no {kind}")
            continue
        if name is None:
            if kind in config.options:
                raise UnknownOptionError(f"{kind} options were given but no {kind}; name one with --{kind}")
            continue
        options = dict(config.options.get(kind, {}))
        offer = {"device": config.device, **({"backbone": built["backbone"]} if "backbone" in built else {})}
        for key, value in offer.items():
            if key not in options and registry.accepts(kind, name, key):
                options[key] = value
        built[kind] = create(kind, name, options)
        explainer_options[kind] = built[kind]
    explainer = create("explainer", config.explainer, explainer_options)
    metrics = [create("metric", name, _metric_options(registry, name, config), label=f"metric.{name}") for name in config.metrics]
    for metric in metrics:
        metric.check(explainer)
    infos = {(info.kind, info.name): info for info in registry.components()}
    plugins = {}
    for kind, name in used:
        info = infos.get((kind, name.partition(":")[0]))
        if info is not None:
            plugins[info.plugin] = info.version
    return Run(dataset.split("train"), dataset.split("test"), explainer, metrics, record, plugins)


def _metric_options(registry: Registry, name: str, config: BenchConfig) -> dict[str, Any]:
    """A metric's ``--option metric.NAME.*`` values, plus the run's seed and device where it takes them.

    Seeding every random metric (stability's noise, faithfulness' random baseline) with the run's
    ``seed`` makes ``summary.json`` reproducible, and a resumed run equal to an uninterrupted one.
    """
    options = dict(config.options.get(f"metric.{name}", {}))
    for key, value in (("seed", config.seed), ("device", config.device)):
        if key not in options and registry.accepts("metric", name, key):
            options[key] = value
    return options


def default_component_name(registry: Registry, explainer: str, kind: str) -> str | None:
    """The explainer factory's default for ``kind`` when it is a registered name."""
    try:
        parameter = inspect.signature(registry.factory("explainer", explainer)).parameters.get(kind)
    except (TypeError, ValueError):
        return None
    return parameter.default if parameter is not None and isinstance(parameter.default, str) else None


def _record(index: int, sample: Sample, explanation: Explanation, row: int, classes: Sequence[str]) -> dict[str, Any]:
    """One ``items.jsonl`` line for an explained image, with its class names and file, for a reader of the run."""
    prediction = int(explanation.predictions[row])

    def name(label: int) -> str | None:
        return str(classes[label]) if 0 <= label < len(classes) else None

    return {
        "index": index,
        "image_id": int(sample.image_id),
        "path": None if sample.path is None else str(sample.path),
        "label": int(sample.label),
        "class": name(int(sample.label)),
        "prediction": prediction,
        "predicted_class": name(prediction),
        "correct": prediction == int(sample.label),
        "scores": [round(float(value), 6) for value in explanation.scores[row]],
        "details": explanation.details[row],
    }


def _decode(test: Dataset, index: int, strict: bool) -> Sample | dict[str, Any]:
    """The sample, or a ``skipped`` record saying why it could not be read."""
    try:
        return test[index]
    except DatasetError as error:
        if strict:
            raise DatasetError(f"{error} (stopping because of --strict)") from error
        return {"index": index, "status": "skipped", "reason": str(error)}


def _explain_missing(
    run: Run,
    todo: list[int],
    batch_size: int,
    strict: bool,
    distributed: Distributed,
    save: Callable[[list[dict[str, Any]]], None],
    progress: Progress,
    done: int = 0,
) -> None:
    """Explain this process's share of ``todo`` a batch at a time, saving each batch's records durably.

    ``todo`` is cut into batches of ``batch_size`` as one process would cut it, and process ``r``
    takes batches ``r, r + world, ...``: every image is explained in the same batch whatever the
    number of processes, so the records are too. ``done`` images of the sample were finished before
    (a resumed run); the progress counts them.
    """
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    mine = [batches[position] for position in distributed.shard(len(batches))]
    progress.start(done + sum(map(len, mine)), done)
    for chunk in mine:
        decoded = [(index, _decode(run.test, index, strict)) for index in chunk]
        samples = [(index, item) for index, item in decoded if isinstance(item, Sample)]
        records = {index: item for index, item in decoded if isinstance(item, dict)}
        if samples:
            explanation = run.explainer.explain([sample for _, sample in samples])
            classes = run.test.classes
            records.update({index: _record(index, sample, explanation, row, classes) for row, (index, sample) in enumerate(samples)})
        save([records[index] for index in chunk])
        progress.advance(len(chunk))
    progress.finish()


def _summary(
    run: Run, directory: RunDirectory, indices: list[int], progress: Progress, *, bootstrap: int, seed: int
) -> tuple[dict[str, Any], list[MetricResult], list[PluginError]]:
    """Score the finished records (and, for other metrics, the explainer on the evaluated images).

    Prediction metrics get a seeded bootstrap ``interval`` (:mod:`xaikit.bench.uncertainty`) of
    ``bootstrap`` resamples over images; any other metric whose result has
    :attr:`~xaikit.MetricResult.unit_values` gets one over its units. A metric whose plugin fails gets
    ``value: null`` with the reason; its error is returned with the results.
    """
    records = [directory.items[index] for index in indices]
    done = [record for record in records if record.get("status") != "skipped"]
    skipped = [{"index": record["index"], "reason": record["reason"]} for record in records if record.get("status") == "skipped"]
    if not done:
        raise XaikitError(f"no test image could be evaluated ({len(skipped)} skipped); see {directory.path / 'items.jsonl'}")
    labels = torch.tensor([record["label"] for record in done], dtype=torch.int64)
    scores = torch.tensor([record["scores"] for record in done], dtype=torch.float32)
    results, failures, intervals = [], [], {}
    for metric in run.metrics:
        progress.stage(f"scoring {metric.name}")
        try:
            if isinstance(metric, PredictionMetric):
                results.append(metric.score(labels, scores))
                if bootstrap:
                    intervals[metric.name] = bootstrap_interval(metric, labels, scores, resamples=bootstrap, seed=seed)
            else:
                with _reported(run.explainer, progress):
                    results.append(metric(run.explainer, Subset(run.test, [record["index"] for record in done])))
                if bootstrap and results[-1].unit_values is not None:
                    intervals[metric.name] = mean_interval(results[-1].unit_values, resamples=bootstrap, seed=seed, method=OVER_UNITS)
        except PluginError as error:  # a plugin's metric failed: keep the others' results and every record
            failures.append(error)
            results.append(MetricResult(metric.name, None, metric.higher_is_better, {"reason": str(error)}))
    summary = {
        "images": len(indices),
        "evaluated": len(done),
        "skipped": skipped,
        "metrics": {
            result.name: {
                "value": None if result.value is None else float(result.value),  # a numpy scalar is checked finite, then a float
                "higher_is_better": bool(result.higher_is_better), "details": dict(result.details),
                **({"interval": intervals[result.name]} if result.name in intervals else {}),
            }
            for result in results
        },
    }
    return summary, results, failures


_SCORED_CALLS = ("concept_maps", "forward", "explain")
"""The explainer's methods a metric sends images through; :func:`_reported` counts their images."""


@contextlib.contextmanager
def _reported(explainer: Explainer, progress: Progress) -> Iterator[None]:
    """Within the block, every image a metric sends through ``explainer`` is reported to :meth:`Progress.scored`.

    Each method of :data:`_SCORED_CALLS` is shadowed by an instance attribute that calls it and
    reports ``len`` of its first argument (a batch of images or samples); leaving the block removes them.
    """

    def counted(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            output = method(inputs, *args, **kwargs)
            progress.scored(len(inputs))
            return output

        return call

    for name in _SCORED_CALLS:
        setattr(explainer, name, counted(getattr(explainer, name)))
    try:
        yield
    finally:
        for name in _SCORED_CALLS:
            vars(explainer).pop(name, None)
        progress.finish()


def run_bench(
    config: BenchConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> BenchResult:
    """Run a benchmark and write it to ``out``: ``config.json``, ``items.jsonl``, ``summary.json``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this with the same arguments and
    the test images are shared out between them: process 0 claims ``out``, fits first (unless the
    explainer's :attr:`~xaikit.Explainer.parallel_fit`), the others fit after it from the caches it
    filled; each explains its share of the batches into its own shard of records; process 0 merges
    them and scores. ``items.jsonl`` and ``summary.json`` are those of a one-process run, and a run
    resumes with any number of processes. Every process returns the same result.

    Args:
        config: what to run.
        out: the run directory.
        resume: continue the run in ``out``, skipping images already recorded; its configuration
            must agree on every key that decides results.
        overwrite: replace whatever run is in ``out``.
        progress: receives progress events (in process 0).
        registry: where component names are looked up (default: the process-wide registry).

    Raises:
        XaikitError: a bad name or option, an existing run without ``resume``/``overwrite`` (or
            with both), a directory holding files that are not a run, a directory another process is
            running in, an undecodable image with ``strict``, or an explainer a metric cannot score.
    """
    from xaikit import get_registry

    config.validate()
    if config.data_root is not None:
        config = dataclasses.replace(config, data_root=os.path.expanduser(config.data_root))
    registry = registry or get_registry()
    distributed = Distributed.from_environment()
    distributed.select_device(config.device)  # on CUDA, "auto" and "cuda" now name this process's GPU; config.json keeps the name asked for
    if not distributed.writes:
        return _follow(config, Path(out).expanduser(), registry, distributed)
    with _sent_on_failure(distributed):
        directory = RunDirectory.claim(out, resume=resume, overwrite=overwrite)
    with directory:
        return _lead(config, directory, registry, distributed, progress or Progress())


def _lead(config: BenchConfig, directory: RunDirectory, registry: Registry, distributed: Distributed, progress: Progress) -> BenchResult:
    """Process 0 (the only one without ``torchrun``): prepare the directory, fit, explain its share, merge, score, write."""
    clock = _Clock()
    with _sent_on_failure(distributed):
        progress.stage("building components")
        run = build_run(config, registry)
        indices = sample_indices(len(run.test), config.limit, config.seed)
        if config.limit is not None and config.limit > len(run.test):
            progress.stage(f"--limit {config.limit} is more than the {len(run.test)} test images: evaluating all of them")
        directory.start(_resolved(config, run), same=RESULT_KEYS)
        _check_records(directory, indices)
    todo = [index for index in indices if index not in directory.items]
    distributed.broadcast(todo)
    clock.lap("build")
    with _sent_on_failure(distributed):
        progress.stage(run.explainer.describe_fit(run.train, config.explainer) + _fit_note(run.explainer, distributed))
        run.explainer.fit(run.train)
        if run.explainer.parallel_fit:
            distributed.barrier()
        directory.record()
    distributed.broadcast(None)
    clock.lap("fit")
    if distributed.active:
        progress.stage(f"explaining {len(todo)} images with {distributed.world} processes; the bar counts this one's share")
    _explain_missing(run, todo, config.batch_size, config.strict, distributed, directory.append, progress, 0 if distributed.active else len(indices) - len(todo))
    distributed.barrier()
    directory.consolidate(indices)
    clock.lap("explain")
    summary, results, failures = _summary(run, directory, indices, progress, bootstrap=config.bootstrap, seed=config.seed)
    directory.write_summary(summary)
    clock.lap("score")
    directory.add_timing({**clock.laps, "images_explained": len(todo), "processes": distributed.world})
    result = BenchResult(path=directory.path, summary=summary, metrics=results)
    distributed.broadcast(result)
    if failures:
        raise type(failures[0])(
            f"{failures[0]}; every explained image is kept in {directory.path / 'items.jsonl'} and summary.json "
            "records the other metrics: fix or drop the metric, then --resume scores again without explaining"
        ) from failures[0]
    return result


def _follow(config: BenchConfig, out: Path, registry: Registry, distributed: Distributed) -> BenchResult:
    """Processes 1, 2, ... under ``torchrun``: build, fit after process 0, explain this process's share into its shard."""
    run = build_run(config, registry)
    todo = _received(distributed)
    if run.explainer.parallel_fit:
        run.explainer.fit(run.train)
        distributed.barrier()
        _received(distributed)
    else:
        _received(distributed)  # process 0 has fitted: its caches hold the gallery
        run.explainer.fit(run.train)
    shard = shard_path(out, distributed.rank)
    _explain_missing(run, todo, config.batch_size, config.strict, distributed, lambda records: append_records(shard, records), Progress())
    distributed.barrier()
    return _received(distributed)


def _fit_note(explainer: Explainer, distributed: Distributed) -> str:
    if not distributed.active:
        return ""
    if explainer.parallel_fit:
        return f" in {distributed.world} processes"
    return f" (in this process first; the other {distributed.world - 1} then read what it cached)"


@contextlib.contextmanager
def _sent_on_failure(distributed: Distributed) -> Iterator[None]:
    """In process 0: an error in the block is sent to the other processes (waiting in :func:`_received`), then raised."""
    try:
        yield
    except Exception as error:
        with contextlib.suppress(Exception):  # the others may have stopped on the same error: report this one, not the broken pipe
            distributed.broadcast(_Stopped(str(error), error.exit_code if isinstance(error, XaikitError) else None))
        raise


@dataclass(frozen=True)
class _Stopped:
    """Process 0's error, as the other processes receive it."""

    message: str
    exit_code: int | None  # an XaikitError's (2 bad input, 3 a plugin failed), None for an xaikit bug


def _received(distributed: Distributed) -> Any:
    """What process 0 broadcasts next; its error is raised here too, with the same exit code."""
    value = distributed.broadcast()
    if isinstance(value, _Stopped):
        if value.exit_code is None:
            raise RuntimeError(f"process 0 stopped: {value.message}")
        error = XaikitError(f"process 0 stopped: {value.message}")
        error.exit_code = value.exit_code
        raise error
    return value


def _resolved(config: BenchConfig, run: Run) -> dict[str, Any]:
    """``config.json``: the configuration as run, with the explainer's ``k`` and the device resolved."""
    from xaikit.backbones.device import resolve_device

    record = {key: value for key, value in config.to_dict().items() if key not in ("options", "backbone", "segmenter", "matcher")}
    record["k"] = run.components["explainer"]["options"].get("k", config.k)
    record["device"], record["device_requested"] = str(resolve_device(config.device)), config.device
    return {**record, "components": run.components, "versions": {**environment(), "plugins": run.plugins}}


class _Clock:
    """Wall seconds of the phases of one session of a run, for ``config.json``'s ``timing`` block."""

    def __init__(self) -> None:
        self.started = time.time()
        self.last = time.perf_counter()
        self.laps: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started))}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[f"{phase}_s"] = round(now - self.last, 3)
        self.last = now


def _check_records(directory: RunDirectory, indices: list[int]) -> None:
    """Refuse a resumed ``items.jsonl`` holding images outside this run's sample."""
    stray = sorted(set(directory.items) - set(indices))
    if stray:
        raise XaikitError(
            f"cannot resume {directory.path}: {directory.path / 'items.jsonl'} has a record of test image {stray[0]}, "
            f"which is not in this run's sample of {len(indices)}; start again with --overwrite"
        )
