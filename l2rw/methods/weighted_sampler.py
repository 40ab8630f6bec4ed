from collections.abc import Iterator

import torch
from torch.utils.data import WeightedRandomSampler

from l2rw.data import LabeledImages
from l2rw.methods.base import Method


class WeightedSampler(Method):
    """Batches drawn with replacement, example probability 1/count(its class): every class is
    equally likely in expectation; the loss is the plain batch mean."""

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        labels = train.labels.cpu()
        counts = torch.bincount(labels, minlength=num_classes).double()
        self.example_weights = (1.0 / counts)[labels]

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        sampler = WeightedRandomSampler(self.example_weights, batch_size, replacement=True, generator=self.generator)
        while True:
            yield torch.tensor(list(sampler), dtype=torch.long)
