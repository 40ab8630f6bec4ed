"""Seconds per training step of each method, and the ratio to plain SGD, measured side by side in one process.

    python scripts/bench_step.py                                  # lenet and resnet32 on CPU
    python scripts/bench_step.py --models resnet32 --repeats 9
    python scripts/bench_step.py --methods "l2rw last_layer" "l2rw fwd" --threads 1   # sgd is always timed
    python scripts/bench_step.py --hardware cuda --overrides hardware.amp=bf16 hardware.compile=true
    python scripts/bench_step.py --models "timm model.arch=convnext_atto" "torchvision model.arch=resnet18"

Each method is composed from conf/ like a real run (model=..., method=..., method.impl=...,
hardware=...) and timed through `l2rw.training.loop.fit` by `l2rw.run.bench` (how: its docstring),
on random uint8 images: CIFAR-shaped (3x32x32) for resnet32 and the timm and torchvision architectures
(a model is a conf/model/ choice and, optionally, its options), digits-shaped (1x8x8) for the others.
The table shows medians over rounds and, for the ratio to sgd, the median and range of the
per-round ratios, in wall-clock and in this process's CPU seconds; peak memory is the extra
memory one step allocates. Measured: docs/performance.md.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import torch

from l2rw.run.bench import METHODS, TABLE_COLUMNS, Comparison, compare_methods, machine, markdown_table


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet32"],
                        help='conf/model/ choices, each optionally with its options: "timm model.arch=vit_tiny_patch16_224 model.image_size=64"')
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
    parser.add_argument("--with-compiled", action="store_true", help="also time every method with hardware.compile=true, in the same rounds")
    parser.add_argument("--csv", type=Path, default=Path("outputs/bench_step.csv"))
    return parser.parse_args(argv)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    comparison = Comparison(
        methods=args.methods, batch=args.batch, meta_batch=args.meta_batch, hardware=args.hardware,
        overrides=args.overrides, rounds=args.repeats, steps=args.steps, with_compiled=args.with_compiled,
    )
    with tempfile.TemporaryDirectory() as workdir:
        rows = [row for model in args.models for row in compare_methods(model, comparison, Path(workdir))]
    rows = [row | {"machine": machine(), "torch": torch.__version__} for row in rows]
    print(comparison.caption())
    print(markdown_table(rows, TABLE_COLUMNS))
    write_csv(rows, args.csv)
    print(f"written: {args.csv}")


if __name__ == "__main__":
    main()
