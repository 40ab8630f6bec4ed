"""How far cheap L2RW weights are from the exact ones, measured on the same batches of one run.

    python scripts/weight_agreement.py                                   # Fashion-MNIST, imbalance 0.9
    python scripts/weight_agreement.py --overrides noise.kind=uniform noise.rate=0.4 imbalance=0.7
    python scripts/weight_agreement.py --overrides dataset=digits --steps 200   # no Fashion-MNIST files

The model trains with exact L2RW (`method.impl=fwd`, no remedy; the run's other settings as
composed from conf/ with --overrides) through `l2rw.training.loop.fit`, built as a run is built
(`l2rw.run.bench.Run`). At every step, on that step's batch, meta batch and model, it also computes the
weights `method.impl=last_layer` would give, and the weights `method.update_every=K` would use
(each example's exact weight from the last step that computed weights and saw it, as the method
remembers them; 1 = uniform before any). Printed per kind, over the steps after the first
--skip: the mean Spearman rank correlation with the exact weights, and the mean Jaccard overlap
of the zero-weight sets (1 = the same examples ignored; steps where neither has a zero count
as 1).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from l2rw import example_weights, reweight
from l2rw.data import build_splits
from l2rw.methods.base import StepLoss
from l2rw.methods.l2rw import L2RW
from l2rw.run.bench import Run, compose_config
from l2rw.training.optimization import make_scheduler

EXACT = ["method=l2rw", "method.impl=fwd", "method.update_every=1", "method.smoothing=0", "method.mix=0"]


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


class AgreementProbe(L2RW):
    """Exact L2RW that also scores, at each step after the first `skip`, the cheap weights of
    the same batch, meta batch and model against its own."""

    def __init__(self, meta_batch_size: int, update_every: int, skip: int):
        super().__init__(meta_batch_size=meta_batch_size)
        self.probed_every, self.skip = update_every, skip
        self.scores: dict[str, list[tuple[float, float]]] = {"last_layer": [], f"update_every={update_every}": []}

    def setup(self, train, meta, num_classes, generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        self.remembered = torch.ones(len(train), device=train.labels.device)  # update_every's weights (x batch size)

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step_meta_batch  # the one drawn for this step, shared by exact and cheap weights

    def step_loss(self, model, x, y, index, lr) -> StepLoss:
        self.step_meta_batch = super().meta_batch()
        cheap = example_weights(model, x, y, *self.step_meta_batch, impl="last_layer", loss_fn=self.loss_fn).weights
        stale = reweight.normalize(self.remembered[index])
        exact = super().step_loss(model, x, y, index, lr)
        if self.steps_taken % self.probed_every == 0:
            self.remembered[index] = exact.weights * len(exact.weights)
        if self.steps_taken > self.skip:
            for kind, weights in zip(self.scores, (cheap, stale)):
                self.scores[kind].append((spearman(weights, exact.weights), zero_overlap(weights, exact.weights)))
        return exact


def measure(overrides: list[str], steps: int, skip: int, update_every: int) -> dict[str, tuple[float, float]]:
    """{cheap kind: (mean Spearman, mean zero-set overlap)} over one exact L2RW run of `steps` steps."""
    cfg = compose_config([*overrides, *EXACT, f"steps={steps}"])
    run = Run.build(cfg, build_splits(cfg))
    probe = AgreementProbe(cfg.method.meta_batch_size, update_every, skip)
    with tempfile.TemporaryDirectory() as workdir:
        run.fit(probe, steps, make_scheduler(run.optimizer, cfg.schedule, steps), Path(workdir) / "metrics.csv")
    return {kind: tuple(torch.tensor(values).mean(0).tolist()) for kind, values in probe.scores.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="config overrides (key=value)")
    parser.add_argument("--steps", type=int, default=600, help="steps of exact L2RW to train and measure")
    parser.add_argument("--skip", type=int, default=100, help="first steps left out of the means")
    parser.add_argument("--update-every", type=int, default=5)
    args = parser.parse_args(argv)
    overrides = ["dataset=fashion_mnist", "imbalance=0.9", *args.overrides]
    print(f"exact L2RW, {args.steps} steps, overrides {' '.join(overrides)} (a later one wins); "
          f"means over steps {args.skip + 1}-{args.steps}")
    print("| cheap weights | Spearman rank correlation with exact | zero-set overlap (Jaccard) |")
    print("|---|---|---|")
    for kind, (rank, overlap) in measure(overrides, args.steps, args.skip, args.update_every).items():
        print(f"| {kind} | {rank:.3f} | {overlap:.3f} |")


if __name__ == "__main__":
    main()
