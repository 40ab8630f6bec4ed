"""Seconds per training step of each method, and the ratio to plain SGD, measured in one process.

    python scripts/bench_step.py                                  # lenet and resnet32 on CPU
    python scripts/bench_step.py --models resnet32 --repeats 9
    python scripts/bench_step.py --methods "l2rw last_layer" "l2rw fwd" --threads 1   # sgd is always timed
    python scripts/bench_step.py --hardware cuda --overrides hardware.amp=bf16 hardware.compile=true

Each configuration is composed from conf/ like a real run (model=..., method=..., method.impl=...,
hardware=...) and timed through `l2rw.training_loop.fit`, the loop `l2rw-train` runs: batch slicing,
normalisation, the method's step loss, backward, optimizer step. Methods take turns: one `fit`
call each per round, round-robin, of fit's warm-up steps and then --steps timed steps; the first
round is discarded as warm-up. So load from other processes hits them alike. The table shows
medians over rounds and, for the ratio to sgd, the median and range of the per-round ratios, in
wall-clock (the timed steps) and in this process's CPU seconds (the whole `fit` call, per step;
they leave out waiting for a core when other jobs share the machine). Data are random uint8 images: CIFAR-shaped
(3x32x32) for resnet32, digits-shaped (1x8x8) for the others.

Measured (tables and the commands that made them): docs/performance.md.

Peak memory: the extra memory one step allocates above what is already resident (parameters,
data), from torch.cuda's peak counter on a GPU and the profiler's allocation trace on CPU.
"""
from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from l2rw.data import LabeledImages, Splits
from l2rw.instantiation import build
from l2rw.models import build_model
from l2rw.train import AMP_DTYPES, CONFIG_DIR, make_optimizer, make_scheduler, place_model, resolve_device
from l2rw.training_loop import fit

METHODS = {  # table label -> config overrides
    "sgd": ["method=sgd"],
    "weighted_sampler": ["method=weighted_sampler"],
    "l2rw double_backprop": ["method=l2rw", "method.impl=double_backprop", "method.meta_batch_size={meta_batch}"],
    "l2rw fwd": ["method=l2rw", "method.impl=fwd", "method.meta_batch_size={meta_batch}"],
    "l2rw last_layer": ["method=l2rw", "method.impl=last_layer", "method.meta_batch_size={meta_batch}"],
    "mwnet double_backprop": ["method=mwnet", "method.impl=double_backprop", "method.meta_batch_size={meta_batch}"],
    "mwnet fwd": ["method=mwnet", "method.impl=fwd", "method.meta_batch_size={meta_batch}"],
}
IMAGE_SHAPES = {"resnet32": (3, 32, 32)}  # CIFAR-10's images; other models get digits' shape
DIGITS_SHAPE = (1, 8, 8)
COMPILED = ", compiled"  # label suffix of the --with-compiled contenders
NUM_CLASSES = 10


def random_splits(shape: tuple[int, ...], train_size: int, meta_size: int, device: torch.device) -> Splits:
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> LabeledImages:
        pixels = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
        return LabeledImages(pixels, torch.randint(0, NUM_CLASSES, (n,), generator=generator))

    # a token test set: fit evaluates once per call, and that time should stay out of the CPU seconds
    clean = torch.zeros(train_size, dtype=torch.bool)  # no label noise
    classes = [str(c) for c in range(NUM_CLASSES)]
    return Splits(images(train_size), images(meta_size), images(NUM_CLASSES), classes, clean).to(device)


def run_overrides(model: str, args: argparse.Namespace) -> list[str]:
    """The config overrides the command line's --model(s), --hardware, --batch and --overrides give."""
    return [f"model={model}", f"hardware={args.hardware}", f"batch_size={args.batch}", *args.overrides]


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with `overrides`, as `l2rw-train OVERRIDES` composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def build_for_timing(overrides: list[str], shape: tuple[int, ...], train_size: int, meta_size: int):
    """(config, device, random splits, placed model, optimizer) as a run with `overrides` builds them."""
    cfg = compose_config(overrides)
    device = resolve_device(cfg.hardware.device)
    torch.manual_seed(cfg.seed)
    splits = random_splits(shape, train_size, meta_size, device)
    model = place_model(build_model(cfg.model, shape, NUM_CLASSES), cfg.hardware, device)
    return cfg, device, splits, model, make_optimizer(model, cfg)


class Contender:
    """One method on its own model, optimizer and data, built from the composed config."""

    def __init__(self, overrides: list[str], shape: tuple[int, ...], train_size: int, meta_size: int, metrics_csv: Path):
        self.cfg, self.device, self.splits, self.model, self.optimizer = build_for_timing(
            overrides, shape, train_size, meta_size
        )
        self.scheduler = make_scheduler(self.optimizer, "constant", 1)
        self.metrics_csv = metrics_csv

    def seconds_per_step(self, steps: int) -> tuple[float, float]:
        """(wall, CPU) seconds per step of one `fit` call: the method's warm-up steps, then
        `steps` more. Wall is fit's own measure (evaluation and warm-up excluded); CPU seconds
        of this process cover the whole call and leave out time spent waiting for a core."""
        method = build(self.cfg.method)
        total = method.warmup_steps + steps
        cpu_started = time.process_time()
        outcome = fit(
            self.model, method, self.splits, self.optimizer, self.scheduler,
            steps=total, batch_size=self.cfg.batch_size, eval_every=total,
            generator=torch.Generator().manual_seed(0), metrics_csv=self.metrics_csv,
            progress=False, amp=AMP_DTYPES[self.cfg.hardware.amp],
        )
        return outcome.seconds_per_step, (time.process_time() - cpu_started) / total

    def peak_step_memory_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.seconds_per_step(1)
            return (torch.cuda.max_memory_allocated(self.device) - resident) / 2**20
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
            self.seconds_per_step(1)
        # allocations are charged to the op that made them, frees appear as "[memory]" events
        allocations = sorted(
            (event.time_range.start, event.self_cpu_memory_usage)
            for event in trace.events() if event.self_cpu_memory_usage
        )
        in_use = peak = 0
        for _, change in allocations:
            in_use += change
            peak = max(peak, in_use)
        return peak / 2**20


def bench_model(model: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    shape = IMAGE_SHAPES.get(model, DIGITS_SHAPE)
    common = run_overrides(model, args)
    variants = {"": []} | ({COMPILED: ["hardware.compile=true"]} if args.with_compiled else {})
    contenders = {
        label + suffix: Contender(
            [*common, *(o.format(meta_batch=args.meta_batch) for o in method), *variant],
            # ten batches to draw from; the meta set is exactly one meta batch, as with CIFAR-10's 10 clean images per class
            shape, 10 * args.batch, args.meta_batch, workdir / f"{model} {label}{suffix}.csv",
        )
        for suffix, variant in variants.items()
        for label, method in METHODS.items() if label == "sgd" or label in args.methods  # sgd: the unit
    }
    times: dict[str, list[float]] = {label: [] for label in contenders}
    cpu_times: dict[str, list[float]] = {label: [] for label in contenders}
    for round_number in range(args.repeats + 1):
        for label, contender in contenders.items():
            wall, cpu = contender.seconds_per_step(args.steps)
            if round_number > 0:  # round 0 warms up allocators, kernels and compiled graphs
                times[label].append(wall)
                cpu_times[label].append(cpu)
    rows = []
    for label, contender in contenders.items():
        rows.append({
            "model": model,
            "input": "x".join(map(str, shape)),
            "method": label,
            "batch": args.batch,
            "meta_batch": args.meta_batch if label.startswith("l2rw") else "",
            "hardware": args.hardware,
            "amp": contender.cfg.hardware.amp,
            "compile": contender.cfg.hardware.compile,
            "channels_last": contender.cfg.hardware.channels_last,
            **timing_columns(label, times, cpu_times),
            "peak_step_mb": round(contender.peak_step_memory_mb(), 1),
            "rounds": args.repeats,
            "steps_per_round": args.steps,
        })
    return rows


def timing_columns(label: str, times: dict[str, list[float]], cpu_times: dict[str, list[float]]) -> dict:
    """Medians over rounds of one contender's seconds per step, and of its per-round ratios to
    the sgd of its own kind (compiled or not) and to the first sgd."""

    def ratios(unit: str, clock: dict[str, list[float]]) -> list[float]:
        return [t / s for t, s in zip(clock[label], clock[unit])]

    own_sgd = "sgd" + COMPILED if label.endswith(COMPILED) else "sgd"
    wall, cpu = ratios(own_sgd, times), ratios(own_sgd, cpu_times)
    return {
        "s_per_step": round(statistics.median(times[label]), 4),
        "s_min": round(min(times[label]), 4),
        "s_max": round(max(times[label]), 4),
        "x_sgd": round(statistics.median(wall), 2),
        "x_sgd_min": round(min(wall), 2),
        "x_sgd_max": round(max(wall), 2),
        "x_first_sgd": round(statistics.median(ratios("sgd", times)), 2),
        "cpu_s_per_step": round(statistics.median(cpu_times[label]), 4),
        "cpu_x_sgd": round(statistics.median(cpu), 2),
        "cpu_x_sgd_min": round(min(cpu), 2),
        "cpu_x_sgd_max": round(max(cpu), 2),
    }


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def caption(args: argparse.Namespace) -> str:
    return f"{machine()}; batch {args.batch}, meta batch {args.meta_batch}; median of {args.repeats} rounds x {args.steps} steps"


def markdown_table(rows: list[dict]) -> str:
    columns = [
        "model", "input", "method", "s_per_step", "s_min", "s_max", "x_sgd", "x_sgd_min", "x_sgd_max", "x_first_sgd",
        "cpu_s_per_step", "cpu_x_sgd", "cpu_x_sgd_min", "cpu_x_sgd_max", "peak_step_mb",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet32"])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--meta-batch", type=int, default=100)
    parser.add_argument("--hardware", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
        help="the methods to time (table labels, e.g. 'l2rw last_layer'); sgd, the unit, is always timed",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--overrides", nargs="*", default=[], help="more config overrides, e.g. hardware.amp=bf16")
    parser.add_argument(
        "--with-compiled", action="store_true",
        help="also time every method with hardware.compile=true, in the same rounds",
    )
    parser.add_argument("--csv", type=Path, default=Path("outputs/bench_step.csv"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            rows += bench_model(model, args, Path(workdir))
    for row in rows:
        row |= {"machine": machine(), "torch": torch.__version__}
    print(caption(args))
    print(markdown_table(rows))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"written: {args.csv}")


if __name__ == "__main__":
    main()
