"""The optimizer and lr schedule every method trains with: SGD, and the lr multiplier at each step.

The schedule counts optimizer steps; epoch-based pieces (warm-up, milestones) are whole epochs of
`steps_per_epoch` steps, and the lr stays constant within an epoch, as Cao et al.'s released LDAM-DRW
code sets it once per epoch (cifar_train.py, `adjust_learning_rate`).

A checkpoint's optimizer and scheduler states are checked against the ones of this configuration
at the saved step (`optimizer_problem`, `scheduled_state`) before they are loaded: torch loads
whatever lr, settings and buffers a file holds.
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


def scheduled_state(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> dict:
    """The state `scheduler` (a `make_scheduler` one) holds after `step` steps: what a checkpoint
    saved at that step holds."""
    return scheduler.state_dict() | {"last_epoch": step, "_step_count": step + 1, "_last_lr": scheduled_lrs(scheduler, step)}


def scheduled_lrs(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> list[float]:
    """Each param group's lr after `step` steps of `scheduler`."""
    return [base * multiplier(step) for base, multiplier in zip(scheduler.base_lrs, scheduler.lr_lambdas)]


def optimizer_problem(saved: object, optimizer: torch.optim.Optimizer, lrs: list[float] | None = None) -> str | None:
    """Why `saved` cannot be `optimizer`'s state dict, to be loaded into it; None when it can. Its
    groups hold as many parameters, numbered as torch numbers them, and the same settings (group
    i's lr `lrs[i]`, where a schedule moved it); each parameter's state holds the buffers the
    optimizer keeps, of the parameter's shape."""
    if not (isinstance(saved, dict) and saved.keys() == {"state", "param_groups"}):
        return "not a state and param_groups"
    groups, ours = saved["param_groups"], optimizer.param_groups
    if not (isinstance(groups, list) and len(groups) == len(ours)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(map(_is_index, g["params"]))
                    for g in groups)):
        return f"param_groups are not its {len(ours)} group(s)"
    parameters, buffers = {}, {}
    for number, (group, our_group, lr, kept) in enumerate(
        zip(groups, ours, lrs or [our_group["lr"] for our_group in ours], _buffers_kept(optimizer))
    ):
        if problem := _group_problem(group, our_group | {"lr": lr}, first_index=len(parameters)):
            return f"group {number} {problem}"
        parameters |= dict(zip(group["params"], our_group["params"]))
        buffers |= dict.fromkeys(group["params"], kept)
    state = saved["state"]
    if not isinstance(state, dict):
        return f"its state is a {type(state).__name__}, not a dict"
    for index, saved_buffers in state.items():
        if index not in parameters or not isinstance(saved_buffers, dict):
            return f"state of unknown parameter {index!r}"
        if problem := _buffers_problem(saved_buffers, buffers[index], parameters[index], index):
            return problem
    return None


def _is_index(value: object) -> bool:
    """An int that is not a bool (True would pass as parameter 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _group_problem(group: dict, ours: dict, first_index: int) -> str | None:
    """Why a saved param group is not `ours`, whose parameters torch numbers on from `first_index`."""
    count = len(ours["params"])
    if len(group["params"]) != count:
        return f"holds {len(group['params'])} parameters, this run's {count}"
    if group["params"] != list(range(first_index, first_index + count)):
        return f"numbers its parameters {group['params']}, not {first_index} to {first_index + count - 1}"
    if extra := [key for key in group if key not in ours]:
        return f"has an unknown setting {extra[0]!r}"
    for key, value in ours.items():
        if key == "params":
            continue
        if key not in group:
            return f"lacks the setting {key!r}"
        if not agrees(group[key], value):
            return f"has {key}={group[key]!r}, this run's {value!r}"
    return None


def agrees(saved: object, ours: object) -> bool:
    """Whether a saved setting is this run's: a float to within rounding (a schedule's lr computed
    on another machine), anything else exactly and of the same type."""
    if isinstance(ours, float):
        return type(saved) in (int, float) and math.isclose(saved, ours, rel_tol=1e-9)
    if isinstance(ours, list | tuple):
        return type(saved) is type(ours) and len(saved) == len(ours) and all(map(agrees, saved, ours))
    return type(saved) is type(ours) and saved == ours


def _buffers_kept(optimizer: torch.optim.Optimizer) -> list[dict[str, torch.Tensor | None]]:
    """Per param group, the buffers the optimizer keeps for a parameter it stepped: found by one
    step of its kind, with the group's settings, on a one-number parameter. A buffer of one number
    stands for one of the parameter's shape; a scalar is a count."""
    kept = []
    for group in optimizer.param_groups:
        parameter = torch.zeros(1, requires_grad=True)
        parameter.grad = torch.zeros(1)
        probe = type(optimizer)([group | {"params": [parameter]}])
        probe.step()
        kept.append(probe.state[parameter])
    return kept


def _buffers_problem(saved: dict, kept: dict[str, torch.Tensor | None], parameter: torch.Tensor, index: int) -> str | None:
    """Why parameter `index`'s saved optimizer state is not the buffers `kept` for `parameter`."""
    if saved.keys() != kept.keys():
        return f"buffers {sorted(saved)} of parameter {index} are not its {sorted(kept)}"
    for name, buffer in saved.items():
        expected = kept[name]
        if expected is None and buffer is None:
            continue
        if not isinstance(buffer, torch.Tensor) or expected is None:
            return f"{name} of parameter {index} is a {type(buffer).__name__}, not {'empty' if expected is None else 'a tensor'}"
        if expected.dim() and (buffer.shape != parameter.shape or buffer.dtype != parameter.dtype):
            return f"{name} of parameter {index} is {described(buffer)}, its parameter {shape_text(parameter.shape)}"
        if not expected.dim() and (buffer.dim() or buffer.dtype != expected.dtype):  # a count
            return f"{name} of parameter {index} is {described(buffer)}, not {described(expected)}"
    return None


def described(tensor: torch.Tensor) -> str:
    """A tensor's shape and dtype, as messages name them: `2x3 float32`."""
    return f"{shape_text(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def shape_text(shape: torch.Size) -> str:
    return "x".join(map(str, shape)) or "a scalar"
