"""The last layer: a plain linear layer, or Cao et al. (2019)'s normalised one for LDAM."""
import torch
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Linear):
    """Cosine similarities between the features and each class's weight vector, in [-1, 1], no
    bias (Cao et al.'s released LDAM code: `NormedLinear`): the LDAM margin and scale assume
    logits of that range. Not a plain linear map, so `method.impl=last_layer` refuses it."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        nn.init.uniform_(self.weight, -1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


def make_head(in_features: int, num_classes: int, normed: bool) -> nn.Linear:
    return NormedLinear(in_features, num_classes) if normed else nn.Linear(in_features, num_classes)
