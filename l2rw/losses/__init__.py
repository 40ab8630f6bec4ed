"""Per-example losses: one file per loss, selected by `conf/loss/<name>.yaml` (`_target_`).

A loss is built with `class_counts` (training images per class after the imbalance profile and
label noise, as the model sees them) plus its own options, and called as
`loss(outputs, targets) -> one loss per example`: the function every method weighs, and the one
L2RW's and Meta-Weight-Net's look-ahead step is taken on (their meta loss stays cross-entropy).
"""
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> one loss per example


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss: per-example cross-entropy. One function object, so that compiled weight
    passes (which guard on it) are built once."""
    return F.cross_entropy(outputs, targets, reduction="none")


def class_prior(class_counts: torch.Tensor) -> torch.Tensor:
    """Class frequencies; a class without training images counts as one, so its log stays finite."""
    counts = class_counts.double().clamp(min=1)
    return (counts / counts.sum()).float()


def true_class_probability(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_y, p_y): the softmax probability each example gives its label."""
    log_p = torch.log_softmax(outputs, dim=1).gather(1, targets[:, None]).squeeze(1)
    return log_p, log_p.exp()


class ExampleStateLoss:
    """A loss that keeps state per training example (ELR's target estimates), keyed by the
    example's index in the training set. The trainer runs each step inside `batch(index)`: a call
    within it reads the batch's state, and the state the step's last call computed (at the
    parameters the step started from) is kept when the step is over. Its state goes into
    checkpoints with the method's (`l2rw.methods.base.Method.state_dict`)."""

    def batch(self, index: torch.Tensor) -> AbstractContextManager:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Raises ValueError, saying why, for a state this loss, built for this training set, does not keep."""
        raise NotImplementedError


def step_of(loss_fn: LossFunction, index: torch.Tensor) -> AbstractContextManager:
    """The context one training step of the batch at training positions `index` runs in."""
    return loss_fn.batch(index) if isinstance(loss_fn, ExampleStateLoss) else nullcontext()
