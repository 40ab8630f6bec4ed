import torch
import torch.nn.functional as F
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.methods.base import Method, StepLoss


class L2RW(Method):
    """Online meta-reweighting: each step's example weights come from `l2rw.reweight`."""

    def __init__(self, meta_batch_size: int):
        self.meta_batch_size = meta_batch_size

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator):
        super().setup(train, meta, num_classes, generator)
        self.meta = meta  # images already normalised to float by the trainer

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole meta set when it fits in one meta batch, else a fresh sample."""
        if len(self.meta) <= self.meta_batch_size:
            return self.meta.images, self.meta.labels
        pick = torch.randperm(len(self.meta), generator=self.generator)[: self.meta_batch_size]
        pick = pick.to(self.meta.labels.device)
        return self.meta.images[pick], self.meta.labels[pick]

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        meta_x, meta_y = self.meta_batch()
        weights = reweight.weights_double_backprop(model, x, y, meta_x, meta_y, lr)
        losses = F.cross_entropy(model(x), y, reduction="none")
        return StepLoss((weights * losses).sum(), weights)
