from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.data import LabeledImages


@dataclass
class StepLoss:
    loss: torch.Tensor     # scalar to back-propagate: sum_i weights_i * loss_i
    weights: torch.Tensor  # (batch,), sums to 1, or all zeros when the step must be skipped


class Method:
    """Plain SGD: uniformly shuffled epochs, every example of a batch weighted 1/batch.

    Other methods override `batches` (which examples a step sees) or `step_loss`
    (how they are weighted). `setup` hands over what only the data knows.
    """

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator):
        self.num_train = len(train)
        self.generator = generator

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Endless index batches over the training set (CPU int64 tensors)."""
        while True:
            order = torch.randperm(self.num_train, generator=self.generator)
            for start in range(0, self.num_train - batch_size + 1, batch_size):
                yield order[start : start + batch_size]
            if self.num_train < batch_size:
                yield order

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        """`index`: positions of the batch in the training set; `lr`: the optimizer's current rate."""
        losses = F.cross_entropy(model(x), y, reduction="none")
        weights = torch.full_like(losses, 1.0 / len(losses)).detach()
        return StepLoss((weights * losses).sum(), weights)
