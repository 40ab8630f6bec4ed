import torch
import torch.nn.functional as F
from torch import nn

from l2rw.data import LabeledImages
from l2rw.errors import UserError, is_number
from l2rw.methods.base import Method, StepLoss


def class_weights(counts: torch.Tensor, beta: float | None) -> torch.Tensor:
    """Per-class loss weights, scaled to mean 1: inverse frequency 1/n_c when `beta` is None, else
    Cui et al. (2019)'s inverse effective number (1 - beta) / (1 - beta^n_c)."""
    counts = counts.double().clamp(min=1)  # a class absent from training is never weighted anyway
    raw = 1.0 / counts if beta is None else (1.0 - beta) / (1.0 - beta**counts)
    return raw * len(raw) / raw.sum()


class ClassBalanced(Method):
    """Uniformly shuffled batches, each example's loss weighted by its class weight, normalised
    per batch like every method's weights so the step size stays that of plain SGD."""

    def __init__(self, beta: float | None = None):
        if beta is not None and not (is_number(beta) and 0.0 <= beta < 1.0):
            raise UserError(f"method.beta={beta} must be in [0, 1) (Cui et al. use 0.9-0.9999), or null for 1/n_c")
        self.beta = beta

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator):
        super().setup(train, meta, num_classes, generator)
        counts = torch.bincount(train.labels.cpu(), minlength=num_classes)
        self.class_weights = class_weights(counts, self.beta).float().to(train.labels.device)

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        losses = F.cross_entropy(model(x), y, reduction="none")
        per_example = self.class_weights[y]
        weights = per_example / per_example.sum()
        return StepLoss((weights * losses).sum(), weights)
