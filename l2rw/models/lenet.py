import torch
from torch import nn

from l2rw.models.heads import NORMED_HEAD, make_head


class LeNet(nn.Module):
    """LeNet-5 layout (conv 6 -> pool -> conv 16 -> pool -> 120 -> 84 -> classes).

    Convolutions are padded so that 8x8 digits and 32x32 CIFAR images both fit;
    the flattened size is measured from the actual image shape. `penultimate` gives the 84
    features that `head`, the last layer, maps to class scores.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, normed_head: NORMED_HEAD = False):
        super().__init__()
        channels = image_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *image_shape)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), make_head(84, num_classes, normed_head)
        )

    @property
    def head(self) -> nn.Linear:
        return self.classifier[-1]  # not a submodule of its own: state_dict keys stay those of earlier checkpoints

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[:-1](self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))
