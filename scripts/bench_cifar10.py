"""Where CIFAR-10 time goes: the input pipeline alone, then a training step of sgd and of l2rw on
ResNet-32, side by side in one process, and what one run of Ren et al.'s schedule takes at that pace.

    python scripts/bench_cifar10.py                  # CPU, batch 100
    python scripts/bench_cifar10.py --hardware cuda
    OMP_NUM_THREADS=1 python scripts/bench_cifar10.py --steps 5   # the command behind docs/performance.md

Both methods are composed as `l2rw-train +experiment=base/ren_cifar dataset=cifar10 method=...`
(ResNet-32, batch 100, momentum 0.9, crop and flip) and timed through `fit` by `l2rw.run.bench`, on
random uint8 CIFAR-shaped images (neither cost depends on the pixel values). The input pipeline
is what `fit` does to a batch before the model sees it: index, crop and flip, normalise.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from l2rw.run.bench import CIFAR_SHAPE, Comparison, Run, compare_methods, input_images_per_second, machine

CIFAR10 = ["+experiment=base/ren_cifar", "dataset=cifar10"]
L2RW = "l2rw fwd"  # l2rw's default impl


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hardware", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--input-batches", type=int, default=200, help="batches the input pipeline is timed on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    overrides = [*CIFAR10, f"hardware={args.hardware}", f"batch_size={args.batch}"]
    run = Run.on_random_data(overrides, CIFAR_SHAPE, 10 * args.batch, args.batch)
    wall, cpu = input_images_per_second(run, args.input_batches)
    print(f"{machine()}; input pipeline (index, crop+flip, normalise): {wall:,.0f} images/s ({cpu:,.0f} per CPU second)")

    comparison = Comparison(
        methods=[L2RW], batch=args.batch, meta_batch=100, hardware=args.hardware, overrides=CIFAR10,
        rounds=args.repeats, steps=args.steps,
    )
    with tempfile.TemporaryDirectory() as workdir:
        rows = {row["method"]: row for row in compare_methods("resnet32", comparison, Path(workdir))}
    print(comparison.caption())
    print(f"| | s/step | CPU s/step | one {run.cfg.steps:,}-step run |")
    print("|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['s_per_step']:.3f} | {row['cpu_s_per_step']:.3f} | {row['s_per_step'] * run.cfg.steps / 3600:.1f} h |")
    print(f"{L2RW} / sgd, median of the per-round ratios: {rows[L2RW]['x_sgd']:.2f}x "
          f"(range {rows[L2RW]['x_sgd_min']:.2f}-{rows[L2RW]['x_sgd_max']:.2f}; torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
