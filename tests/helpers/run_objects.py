"""What a checkpoint saves and restores: a run's model, optimizer, scheduler and method."""
import torch
from torch import nn

from l2rw.data import LabeledImages, Splits
from l2rw.methods.base import Method
from l2rw.run.spec import RUN_CONFIG_KEYS

# A config.yaml as an earlier run leaves it in its run dir (the keys every run's has): a run dir holding
# one is an l2rw run's, which a rerun may write into
EARLIER_CONFIG = "".join(f"{key}: 0\n" for key in sorted(RUN_CONFIG_KEYS))


def run_objects(width: int = 2):
    """A model, optimizer, scheduler and method as a run holds them, at their smallest."""
    model = nn.Linear(width, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    method = Method()
    train = run_splits().train
    method.setup(train, train, 2, torch.Generator().manual_seed(0))
    return model, optimizer, scheduler, method


def run_splits(num_train: int = 4) -> Splits:
    """The data run_objects' method is set up for: `num_train` training images of 2 classes."""
    images = LabeledImages(torch.zeros(num_train, 1, 1, 1, dtype=torch.uint8), torch.zeros(num_train, dtype=torch.long))
    return Splits(images, images, images, ["a", "b"], torch.zeros(num_train, dtype=torch.bool))
