import math

import torch
from torch import nn


class MLP(nn.Module):
    """Flattened pixels through ReLU hidden layers of the given widths."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, hidden: list[int]):
        super().__init__()
        widths = [math.prod(image_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
