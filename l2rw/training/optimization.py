"""The optimizer and lr schedule every method trains with: SGD, and the lr multiplier at each step.

The schedule counts optimizer steps; epoch-based pieces (warm-up, milestones) are whole epochs of
`steps_per_epoch` steps, and the lr stays constant within an epoch, as Cao et al.'s released LDAM-DRW
code sets it once per epoch (cifar_train.py, `adjust_learning_rate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


@dataclass(frozen=True)
class LrSchedule:
    """lr = base lr x `multiplier(step)`, step counted from 0.

    kind: constant; cosine (to 0 at `steps`); step (x0.1 at 50% and 75% of `steps`); multistep
    (x `factors[i]` of the base lr from epoch `milestones[i]` on). `warmup_epochs` > 0: epoch e <
    warmup_epochs trains at (e + 1) / warmup_epochs of the base lr instead, whatever the kind."""

    kind: str
    steps: int
    steps_per_epoch: int = 1
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    factors: tuple[float, ...] = ()

    def multiplier(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * step / self.steps))
        if self.kind == "step":
            return 0.1 ** sum(step >= drop for drop in (int(self.steps * 0.5), int(self.steps * 0.75)))
        if self.kind == "multistep":
            reached = [factor for milestone, factor in zip(self.milestones, self.factors) if epoch >= milestone]
            return reached[-1] if reached else 1.0
        return 1.0

    @property
    def first_drop(self) -> int | None:
        """The first step of the first lr drop of a step or multistep schedule (None for the others):
        where Cao et al.'s deferred re-weighting switches on."""
        if self.kind == "step":
            return int(self.steps * 0.5)
        if self.kind == "multistep" and self.milestones:
            return self.milestones[0] * self.steps_per_epoch
        return None


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Batches in one pass over the training set: a partial last batch is dropped, and a batch
    larger than the set is the whole set (`Method.batches`)."""
    return max(train_size // batch_size, 1)


def run_steps(cfg: DictConfig, train_size: int) -> int:
    """A run's length in optimizer steps: `steps`, or what `epochs` come to over a training set of
    `train_size` images."""
    return cfg.steps if cfg.epochs is None else cfg.epochs * steps_per_epoch(train_size, cfg.batch_size)


def lr_schedule(cfg: DictConfig, steps: int, steps_per_epoch: int) -> LrSchedule:
    """The schedule of a run of `steps` steps whose training set holds `steps_per_epoch` batches."""
    return LrSchedule(
        cfg.schedule, steps, steps_per_epoch, cfg.warmup_epochs, tuple(cfg.lr_milestones), tuple(cfg.lr_factors)
    )


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str | LrSchedule, steps: int | None = None):
    """A torch scheduler following `schedule` (a kind, with `steps`, for the schedules without epochs)."""
    if isinstance(schedule, str):
        schedule = LrSchedule(schedule, steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.multiplier)
