import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.methods.base import Method, StepLoss
from l2rw.options import number, optional


def class_weights(counts: torch.Tensor, beta: float | None) -> torch.Tensor:
    """Per-class loss weights, scaled to mean 1: inverse frequency 1/n_c when `beta` is None, else
    Cui et al. (2019)'s inverse effective number (1 - beta) / (1 - beta^n_c)."""
    counts = counts.double().clamp(min=1)  # a class absent from training is never weighted anyway
    raw = 1.0 / counts if beta is None else (1.0 - beta) / (1.0 - beta**counts)
    return raw * len(raw) / raw.sum()


class ClassBalanced(Method):
    """Uniformly shuffled batches, each example's loss weighted by its class weight, normalised
    per batch like every method's weights so the step size stays that of plain SGD.

    `defer`: the fraction of the run's steps trained with uniform weights before the class weights
    switch on (Cao et al. 2019's deferred re-weighting, DRW; they switch at 80%)."""

    def __init__(
        self,
        beta: optional(number(ge=0, lt=1, note=" (Cui et al. use 0.9-0.9999)"), "for 1/n_c") = None,
        defer: number(ge=0, lt=1, note=" (the fraction of steps before the class weights switch on; 0: from the start)") = 0.0,
    ):
        self.beta = beta
        self.defer = defer

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        counts = torch.bincount(train.labels.cpu(), minlength=num_classes)
        self.class_weights = class_weights(counts, self.beta).float().to(train.labels.device)
        self.unweighted_steps = int(self.defer * self.run_steps)
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps_taken = state["steps_taken"]

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        self.steps_taken += 1
        if self.steps_taken <= self.unweighted_steps:
            return super().step_loss(model, x, y, index, lr)
        losses = self.loss_fn(model(x), y)
        per_example = self.class_weights[y]
        weights = per_example / per_example.sum()
        return StepLoss((weights * losses).sum(), weights)
