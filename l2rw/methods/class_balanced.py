import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.methods.base import DRW_SHARE, Method, StepLoss, deferred_steps, step_count
from l2rw.run.options import choice, either, number, optional


def class_weights(counts: torch.Tensor, beta: float | None) -> torch.Tensor:
    """Per-class loss weights, scaled to mean 1: inverse frequency 1/n_c when `beta` is None, else
    Cui et al. (2019)'s inverse effective number (1 - beta) / (1 - beta^n_c)."""
    counts = counts.double().clamp(min=1)  # a class absent from training is never weighted anyway
    raw = 1.0 / counts if beta is None else (1.0 - beta) / (1.0 - beta**counts)
    return raw * len(raw) / raw.sum()


class ClassBalanced(Method):
    """Uniformly shuffled batches, each example's loss weighted by its class weight w_c, scaled to
    mean 1 over the classes: inverse frequency, or Cui et al. 2019's inverse effective number;
    optionally switched on late in the run (Cao et al. 2019's deferred re-weighting, DRW)."""

    def __init__(
        self,
        beta: optional(number(ge=0, lt=1, note=" (Cui et al. use 0.9-0.9999)"), "for 1/n_c",
                       doc="the effective number's beta: class weights proportional to (1 - beta) / (1 - beta^n_c)") = None,
        defer: either(
            number(ge=0, lt=1, note=" (the fraction of steps before the class weights switch on; 0: from the start)"),
            choice("first_lr_drop"),
            doc="how long the run trains unweighted first (DRW); `first_lr_drop`: until the lr schedule's first drop, "
                "as Cao et al. switch at epoch 160 with theirs (a schedule without drops, e.g. cosine: "
                f"{DRW_SHARE:.0%} of the steps, their 160 of 200)",
        ) = 0.0,
        normalize: choice("weights", "batch_size",
                          doc="`weights`: the batch's loss is sum w*loss / sum w, the step size of plain SGD (Cao et "
                              "al.'s weighted cross-entropy); `batch_size`: sum w*loss / B (Cui et al.'s class-balanced "
                              "losses), so a batch of frequent, lightly weighted classes takes a smaller step") = "weights",
    ):
        self.beta = beta
        self.defer = defer
        self.normalize = normalize

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        counts = torch.bincount(train.labels.cpu(), minlength=num_classes)
        self.class_weights = class_weights(counts, self.beta).float().to(train.labels.device)
        self.unweighted_steps = deferred_steps(self.defer, self.run_steps, self.first_lr_drop)
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps_taken = step_count(state)

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        self.steps_taken += 1
        if self.steps_taken <= self.unweighted_steps:
            return super().step_loss(model, x, y, index, lr)
        losses = self.loss_fn(model(x), y)
        per_example = self.class_weights[y]
        weights = per_example / (per_example.sum() if self.normalize == "weights" else len(per_example))
        return StepLoss((weights * losses).sum(), weights)
