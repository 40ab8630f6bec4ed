from collections.abc import Iterator

import torch
from torch.utils.data import WeightedRandomSampler

from l2rw.data import LabeledImages
from l2rw.methods.base import Method


def class_balanced_batches(labels: torch.Tensor, num_classes: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches drawn with replacement, example probability 1/count(its class):
    every class is equally likely in expectation."""
    labels = labels.cpu()
    counts = torch.bincount(labels, minlength=num_classes).double()
    sampler = WeightedRandomSampler((1.0 / counts)[labels], batch_size, replacement=True, generator=generator)
    while True:
        yield torch.tensor(list(sampler), dtype=torch.long)


class WeightedSampler(Method):
    """Batches from `class_balanced_batches`; the loss is the plain batch mean."""

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator):
        super().setup(train, meta, num_classes, generator)
        self.train_labels, self.num_classes = train.labels, num_classes

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        return class_balanced_batches(self.train_labels, self.num_classes, batch_size, self.generator)
