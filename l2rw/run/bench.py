"""The timing harness every benchmark in scripts/ runs on.

A benchmark names its contenders as config overrides; each is composed from conf/ like an
`l2rw-train` command line and built the way `l2rw.run.train.train` builds a run (seed, splits on the
device, placed model, the loss from the training set's class counts, optimizer), on random
uint8 images of the model's input shape: step time does not depend on the pixel values. Steps are
timed through `l2rw.training.loop.fit`, the loop a run trains in (batch slicing, augmentation,
normalisation, the method's step loss and skip rule, backward, optimizer step), never a copy of it.

Contenders take turns: one `fit` call each per round, round-robin, of the method's warm-up steps
then the timed steps; the first round is discarded as warm-up (allocators, kernels, compiled
graphs). So load from other processes hits them alike, and a ratio taken within a round is the
side-by-side comparison. Two clocks: wall seconds of the timed steps (fit's own measure, evaluation
and warm-up steps excluded) and this process's CPU seconds of the whole call per step (which leave
out waiting for a core when other jobs share the machine).
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from l2rw.data import LabeledImages, Splits
from l2rw.data.augment import random_crop_and_flip
from l2rw.losses import LossFunction
from l2rw.methods import catalog
from l2rw.methods.base import Method
from l2rw.run import CONFIG_DIR
from l2rw.run.hardware import resolve_device
from l2rw.run.instantiation import build
from l2rw.run.train import build_learner, build_network
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.evaluation import PixelStandardizer
from l2rw.training.loop import FitOptions, fit
from l2rw.training.optimization import LrSchedule, make_scheduler
from l2rw.training.state import FitResult

NUM_CLASSES = 10
DIGITS_SHAPE = (1, 8, 8)
CIFAR_SHAPE = (3, 32, 32)
# The CIFAR model and the libraries' architectures are timed on CIFAR's shape, every other model on digits'
IMAGE_SHAPES = {"resnet32": CIFAR_SHAPE, "timm": CIFAR_SHAPE, "torchvision": CIFAR_SHAPE}

UNIT = "sgd"  # every ratio is to the sgd contender of the same round
COMPILED = ", compiled"  # label suffix of the hardware.compile=true contenders, whose unit is compiled sgd


def method_contenders() -> dict[str, list[str]]:
    """Table label -> method overrides: each method of conf/method/ (sgd, the unit, first), once per
    way it computes its weights (`impl`); one that draws meta batches gets the benchmark's meta
    batch size ({meta_batch}, filled in per comparison), and each its `full_step_overrides`."""
    contenders = {}
    for name, method in sorted(catalog().items(), key=lambda item: item[0] != UNIT):
        meta_batch = ["method.meta_batch_size={meta_batch}"] if method.uses_meta_set else []
        for impl in method.implementations or [None]:
            label, chosen = (name, []) if impl is None else (f"{name} {impl}", [f"method.impl={impl}"])
            contenders[label] = [f"method={name}", *chosen, *meta_batch, *method.full_step_overrides]
    return contenders


METHODS = method_contenders()


def image_shape(model: str) -> tuple[int, ...]:
    """`model`: a conf/model/ choice, then optionally its options ("timm model.arch=convnext_atto")."""
    return IMAGE_SHAPES.get(model.split()[0], DIGITS_SHAPE)


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with `overrides`, as `l2rw-train OVERRIDES` composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def random_splits(shape: tuple[int, ...], train_size: int, meta_size: int) -> Splits:
    """Random uint8 images and labels; no label noise, and a token test set, because `fit`
    evaluates once per call and that time should stay out of the CPU seconds."""
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> LabeledImages:
        pixels = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
        return LabeledImages(pixels, torch.randint(0, NUM_CLASSES, (n,), generator=generator))

    classes = [str(c) for c in range(NUM_CLASSES)]
    return Splits(images(train_size), images(meta_size), images(NUM_CLASSES), classes, torch.zeros(train_size, dtype=torch.bool))


@dataclass
class Run:
    """One composed configuration built as `l2rw.run.train.train` builds it."""

    cfg: DictConfig
    device: torch.device
    splits: Splits
    model: torch.nn.Module
    loss_fn: LossFunction
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, cfg: DictConfig, splits: Splits) -> Run:
        """The device, the splits on it, the placed model, the loss from the training set's class
        counts and the optimizer, in `l2rw.run.train.train`'s order from the seed on."""
        device = resolve_device(cfg.hardware.device)
        torch.manual_seed(cfg.seed)
        splits = splits.to(device)
        learner = build_learner(cfg, splits, device)
        return cls(cfg, device, splits, learner.model, learner.loss_fn, learner.optimizer)

    @classmethod
    def on_random_data(cls, overrides: list[str], shape: tuple[int, ...], train_size: int, meta_size: int) -> Run:
        """`l2rw-train OVERRIDES`, built on `random_splits` of this shape and size."""
        return cls.build(compose_config(overrides), random_splits(shape, train_size, meta_size))

    def fit(self, method: Method, steps: int, scheduler, metrics_csv: Path, checkpoint: Checkpoint | None = None) -> FitResult:
        """`steps` steps of `fit` with the run's settings; one evaluation, at the end, and no progress bar."""
        options = replace(FitOptions.from_config(self.cfg, steps), eval_every=steps, progress=False)
        new_network = partial(build_network, self.cfg, self.splits, self.device, LrSchedule("constant", steps))
        return fit(self.model, method, self.splits, self.optimizer, scheduler, options,
                   metrics_csv=metrics_csv, checkpoint=checkpoint, loss_fn=self.loss_fn, new_network=new_network)


class Contender:
    """One method on its own model, optimizer and data, timed one `fit` call at a time."""

    def __init__(self, run: Run, metrics_csv: Path):
        self.run = run
        self.scheduler = make_scheduler(run.optimizer, "constant", 1)  # every call trains at the configured lr
        self.metrics_csv = metrics_csv

    def seconds_per_step(self, steps: int) -> tuple[float, float]:
        """(wall, CPU) seconds per step of one `fit` call: the method's warm-up steps, then `steps` more."""
        method = build(self.run.cfg.method)
        total = method.warmup_steps + steps
        cpu_started = time.process_time()
        outcome = self.run.fit(method, total, self.scheduler, self.metrics_csv)
        return outcome.seconds_per_step, (time.process_time() - cpu_started) / total

    def peak_step_memory_mb(self) -> float:
        """The memory one step allocates above what is already resident (parameters, data): torch.cuda's
        peak counter on a GPU, the profiler's allocation trace on CPU."""
        device = self.run.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            resident = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.seconds_per_step(1)
            return (torch.cuda.max_memory_allocated(device) - resident) / 2**20
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
            self.seconds_per_step(1)
        # allocations are charged to the op that made them, frees appear as "[memory]" events
        changes = sorted((event.time_range.start, event.self_cpu_memory_usage) for event in trace.events() if event.self_cpu_memory_usage)
        in_use = peak = 0
        for _, change in changes:
            in_use += change
            peak = max(peak, in_use)
        return peak / 2**20


@dataclass
class Timings:
    """Seconds per step of one contender, one value per timed round."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def time_in_rounds(contenders: dict[str, Contender], rounds: int, steps: int) -> dict[str, Timings]:
    """Each contender's seconds per step in `rounds` round-robin rounds of `steps` steps, after one
    warm-up round."""
    timings = {label: Timings() for label in contenders}
    for round_number in range(rounds + 1):
        for label, contender in contenders.items():
            wall, cpu = contender.seconds_per_step(steps)
            if round_number > 0:
                timings[label].wall.append(wall)
                timings[label].cpu.append(cpu)
    return timings


def unit_of(label: str) -> str:
    return UNIT + COMPILED if label.endswith(COMPILED) else UNIT


def timing_columns(label: str, timings: dict[str, Timings]) -> dict:
    """Medians over rounds of one contender's seconds per step, and of its per-round ratios to the
    sgd of its own kind (compiled or not) and to the first (eager) sgd."""
    mine, unit = timings[label], timings[unit_of(label)]

    def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
        return [t / s for t, s in zip(numerators, denominators)]

    wall, cpu = ratios(mine.wall, unit.wall), ratios(mine.cpu, unit.cpu)
    return {
        "s_per_step": round(statistics.median(mine.wall), 4),
        "s_min": round(min(mine.wall), 4),
        "s_max": round(max(mine.wall), 4),
        "x_sgd": round(statistics.median(wall), 2),
        "x_sgd_min": round(min(wall), 2),
        "x_sgd_max": round(max(wall), 2),
        "x_first_sgd": round(statistics.median(ratios(mine.wall, timings[UNIT].wall)), 2),
        "cpu_s_per_step": round(statistics.median(mine.cpu), 4),
        "cpu_x_sgd": round(statistics.median(cpu), 2),
        "cpu_x_sgd_min": round(min(cpu), 2),
        "cpu_x_sgd_max": round(max(cpu), 2),
    }


@dataclass(frozen=True)
class Comparison:
    """What `compare_methods` times: the methods (METHODS labels; sgd, the unit, is always timed),
    the sizes, and overrides every contender shares."""

    methods: list[str]
    batch: int = 100
    meta_batch: int = 100
    hardware: str = "cpu"
    overrides: list[str] = field(default_factory=list)
    rounds: int = 7
    steps: int = 3
    with_compiled: bool = False  # also every method with hardware.compile=true, in the same rounds

    def caption(self) -> str:
        return f"{machine()}; batch {self.batch}, meta batch {self.meta_batch}; median of {self.rounds} rounds x {self.steps} steps"


def run_overrides(model: str, hardware: str, batch: int, overrides: list[str]) -> list[str]:
    """What a benchmark's command line (model, hardware, batch and more overrides) sets in the config."""
    choice, *model_options = model.split()
    return [f"model={choice}", *model_options, f"hardware={hardware}", f"batch_size={batch}", *overrides]


def contender_overrides(model: str, label: str, comparison: Comparison) -> list[str]:
    common = run_overrides(model, comparison.hardware, comparison.batch, comparison.overrides)
    return [*common, *(o.format(meta_batch=comparison.meta_batch) for o in METHODS[label])]


def compare_methods(model: str, comparison: Comparison, workdir: Path) -> list[dict]:
    """One row per method on `model`: its timing columns and the peak memory of one step."""
    shape = image_shape(model)
    variants = {"": []} | ({COMPILED: ["hardware.compile=true"]} if comparison.with_compiled else {})
    labels = [label for label in METHODS if label == UNIT or label in comparison.methods]
    contenders = {
        label + suffix: Contender(
            # ten batches to draw from; the meta set is exactly one meta batch, as with CIFAR-10's 10 clean images per class
            Run.on_random_data([*contender_overrides(model, label, comparison), *variant], shape, 10 * comparison.batch, comparison.meta_batch),
            workdir / f"{model} {label}{suffix}.csv",
        )
        for suffix, variant in variants.items() for label in labels
    }
    timings = time_in_rounds(contenders, comparison.rounds, comparison.steps)
    return [
        {
            "model": model,
            "input": "x".join(map(str, shape)),
            "method": label,
            "batch": comparison.batch,
            "meta_batch": comparison.meta_batch if catalog()[contender.run.cfg.method.name].uses_meta_set else "",
            "hardware": comparison.hardware,
            "amp": contender.run.cfg.hardware.amp,
            "compile": contender.run.cfg.hardware.compile,
            "channels_last": contender.run.cfg.hardware.channels_last,
            **timing_columns(label, timings),
            "peak_step_mb": round(contender.peak_step_memory_mb(), 1),
            "rounds": comparison.rounds,
            "steps_per_round": comparison.steps,
        }
        for label, contender in contenders.items()
    ]


def input_images_per_second(run: Run, repeats: int) -> tuple[float, float]:
    """(wall, CPU) images per second of what `fit` does to a batch before the model sees it: the
    method's next index batch, crop and flip, normalisation (the same calls, timed alone)."""
    splits, generator = run.splits, torch.Generator().manual_seed(0)
    standardize = PixelStandardizer.of(splits.train.images, run.model)
    method = Method()
    method.setup(splits.train, splits.meta, NUM_CLASSES, generator)
    batches = method.batches(run.cfg.batch_size)

    def next_batch() -> torch.Tensor:
        return standardize(random_crop_and_flip(splits.train.images[next(batches).to(run.device)], generator))

    next_batch()  # warm-up
    synchronize(run.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        next_batch()
    synchronize(run.device)
    images = repeats * run.cfg.batch_size
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


TABLE_COLUMNS = [
    "model", "input", "method", "s_per_step", "s_min", "s_max", "x_sgd", "x_sgd_min", "x_sgd_max", "x_first_sgd",
    "cpu_s_per_step", "cpu_x_sgd", "cpu_x_sgd_min", "cpu_x_sgd_max", "peak_step_mb",
]
