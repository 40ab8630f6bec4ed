"""How far cheap L2RW weights are from the exact ones, measured on the same batches of one run.

    python scripts/weight_agreement.py                                   # Fashion-MNIST, imbalance 0.9
    python scripts/weight_agreement.py --overrides noise.kind=uniform noise.rate=0.4 imbalance=0.7
    python scripts/weight_agreement.py --overrides dataset=digits --steps 200   # no Fashion-MNIST files

The model trains with exact L2RW (`method.impl=fwd`, the run's other settings as composed from
conf/ with --overrides). At every step, on that step's batch and model, it also computes the
weights `method.impl=last_layer` would give, and the weights `method.update_every=K` would use
(each example's exact weight from the last step that computed weights and saw it, as the method
remembers them; 1 = uniform before any). Printed per kind, over the steps after the first
--skip: the mean Spearman rank correlation with the exact weights, and the mean Jaccard overlap
of the zero-weight sets (1 = the same examples ignored; steps where neither has a zero count
as 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import compose_config

from l2rw import example_weights, reweight
from l2rw.data import LabeledImages, build_splits
from l2rw.instantiation import build
from l2rw.models import build_model
from l2rw.optimization import make_optimizer, make_scheduler
from l2rw.training_loop import PixelStandardizer


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties get the mean of their ranks: the many zero weights tie)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        order = x.argsort()
        ranked = torch.empty_like(x, dtype=torch.float64)
        ranked[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():  # average the ranks of ties
            tie = x == value
            ranked[tie] = ranked[tie].mean()
        return ranked

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / denominator if denominator else 1.0


def zero_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    za, zb = a == 0, b == 0
    union = (za | zb).sum().item()
    return (za & zb).sum().item() / union if union else 1.0


def measure(overrides: list[str], steps: int, skip: int, update_every: int) -> dict[str, tuple[float, float]]:
    cfg = compose_config(["method=l2rw", "method.impl=fwd", f"steps={steps}", *overrides])
    torch.manual_seed(cfg.seed)
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg.schedule, steps)
    standardize = PixelStandardizer(splits.train.images)
    meta = LabeledImages(standardize(splits.meta.images), splits.meta.labels)
    generator = torch.Generator().manual_seed(cfg.seed)
    method = build(cfg.method)
    method.setup(splits.train, meta, splits.num_classes, generator)
    batches = method.batches(cfg.batch_size)
    memory = torch.ones(len(splits.train))  # update_every's remembered weights (x batch size)
    scores = {"last_layer": [], f"update_every={update_every}": []}
    for step in range(1, steps + 1):
        index = next(batches)
        x, y = standardize(splits.train.images[index]), splits.train.labels[index]
        meta_x, meta_y = method.meta_batch()
        cheap = example_weights(model, x, y, meta_x, meta_y, impl="last_layer").weights
        stale = reweight.normalize(memory[index])
        exact, losses = example_weights(model, x, y, meta_x, meta_y)
        if step % update_every == 0:
            memory[index] = exact * len(exact)
        if step > skip:
            for kind, weights in (("last_layer", cheap), (f"update_every={update_every}", stale)):
                scores[kind].append((spearman(weights, exact), zero_overlap(weights, exact)))
        if exact.sum() > 0:
            optimizer.zero_grad(set_to_none=True)
            (exact * losses).sum().backward()
            optimizer.step()
        scheduler.step()
    return {kind: tuple(torch.tensor(values).mean(0).tolist()) for kind, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="config overrides (key=value)")
    parser.add_argument("--steps", type=int, default=600, help="steps of exact L2RW to train and measure")
    parser.add_argument("--skip", type=int, default=100, help="first steps left out of the means")
    parser.add_argument("--update-every", type=int, default=5)
    args = parser.parse_args()
    overrides = ["dataset=fashion_mnist", "imbalance=0.9", *args.overrides]
    print(f"exact L2RW, {args.steps} steps, overrides {' '.join(overrides)} (a later one wins); "
          f"means over steps {args.skip + 1}-{args.steps}")
    print("| cheap weights | Spearman rank correlation with exact | zero-set overlap (Jaccard) |")
    print("|---|---|---|")
    for kind, (rank, overlap) in measure(overrides, args.steps, args.skip, args.update_every).items():
        print(f"| {kind} | {rank:.3f} | {overlap:.3f} |")


if __name__ == "__main__":
    main()
