"""What a checkpoint saves and restores: a run's model, optimizer, scheduler and method."""
import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.methods.base import Method


def run_objects(width: int = 2):
    """A model, optimizer, scheduler and method as a run holds them, at their smallest."""
    model = nn.Linear(width, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    method = Method()
    train = LabeledImages(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    method.setup(train, train, 2, torch.Generator().manual_seed(0))
    return model, optimizer, scheduler, method
