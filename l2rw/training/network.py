"""A model with its optimizer and lr schedule: the run's own, and those a method trains beside it
(co-teaching's peer), built alike. `network_problem` checks a saved one against this run's
before anything is loaded (checkpoints, a method's own networks)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from l2rw.training.optimization import agrees, described, optimizer_problem, scheduled_lrs, scheduled_state

NETWORK_PARTS = ("model", "optimizer", "scheduler")


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip_grad_norm: float | None) -> None:
    """One optimizer step on `loss`'s gradient, its L2 norm clipped to `clip_grad_norm` (None: unclipped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()


@dataclass
class Network:
    """A model trained as the run trains its own: the run's architecture, optimizer, lr schedule
    and gradient clipping. `l2rw.methods.base.Method.setup` hands a method that trains models of
    its own a `NewNetwork` that builds one."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    clip_grad_norm: float | None = None

    def update(self, loss: torch.Tensor) -> None:
        """One step on `loss` (its backward outside autocast, as the trainer's), then one of the lr schedule."""
        with torch.autocast(next(self.model.parameters()).device.type, enabled=False):
            apply_update(self.model, self.optimizer, loss, self.clip_grad_norm)
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict, step: int) -> None:
        """Load the state saved after `step` steps; ValueError, saying why, for one this network does not keep."""
        if problem := _keys_problem("network", state, dict.fromkeys(NETWORK_PARTS)) or network_problem(
            state["model"], state["optimizer"], state["scheduler"], self.model, self.optimizer, self.scheduler, step
        ):
            raise ValueError(problem)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


NewNetwork = Callable[[], Network]


def network_problem(saved_model: object, saved_optimizer: object, saved_scheduler: object, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, step: int) -> str | None:
    """Why the saved model, optimizer and scheduler states are not these ones' after `step` steps of
    this configuration's schedule; None when they are."""
    return (
        tensors_problem("model", saved_model, model.state_dict())
        or _part("optimizer", optimizer_problem(saved_optimizer, optimizer, scheduled_lrs(scheduler, step)))
        or _scheduler_problem(saved_scheduler, scheduled_state(scheduler, step), step)
    )


def tensors_problem(part: str, saved: object, expected: dict[str, torch.Tensor]) -> str | None:
    """Why the saved state dict `saved` does not fit `expected` (this run's); None when it does."""
    if problem := _keys_problem(part, saved, expected):
        return problem
    for key, tensor in expected.items():
        value = saved[key]
        if not isinstance(value, torch.Tensor):
            return f"{part} ({key} is a {type(value).__name__}, not a tensor)"
        if value.shape != tensor.shape or value.dtype != tensor.dtype:
            return f"{part} ({key} is {described(value)}, this run's is {described(tensor)})"
    return None


def _keys_problem(part: str, saved: object, expected: dict) -> str | None:
    if not isinstance(saved, dict):
        return f"{part} (a {type(saved).__name__}, not a state dict)"
    if missing := [key for key in expected if key not in saved]:
        return f"{part} (it lacks {missing[0]!r})"
    if extra := [key for key in saved if key not in expected]:
        return f"{part} (unknown key {extra[0]!r})"
    return None


def _scheduler_problem(saved: object, expected: dict, step: int) -> str | None:
    """Why the saved scheduler state is not `expected`, this run's schedule's at `step`."""
    if problem := _keys_problem("scheduler", saved, expected):
        return problem
    for key, value in expected.items():
        if not agrees(saved[key], value):
            return f"scheduler ({key} is {saved[key]!r}; this run's schedule has {value!r} at step {step})"
    return None


def _part(part: str, problem: str | None) -> str | None:
    return problem and f"{part} ({problem})"
