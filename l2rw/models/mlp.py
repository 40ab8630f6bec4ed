import math

import torch
from torch import nn

from l2rw.run.options import list_of, whole


class MLP(nn.Module):
    """Flattened pixels through ReLU hidden layers; `penultimate` gives the last hidden layer's
    output (the pixels when there is none), `head` the final linear layer."""

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int,
        hidden: list_of(whole(1), "a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]",
                        doc="the ReLU hidden layers between the pixels and the classes, in order; [] is a linear model"),
    ):
        super().__init__()
        widths = [math.prod(image_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    @property
    def head(self) -> nn.Linear:
        return self.net[-1]  # not a submodule of its own: state_dict keys stay those of earlier checkpoints

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))
