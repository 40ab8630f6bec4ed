"""The last layer: a plain linear layer, or Cao et al. (2019)'s normalised one for LDAM."""
import torch
import torch.nn.functional as F
from torch import nn

from l2rw.run.options import flag

# The option of every model whose last layer can be NormedLinear
NORMED_HEAD = flag(doc="true: the last layer gives cosine scores in [-1, 1] (`NormedLinear`, Cao et al.'s), the logits "
                       "`loss=ldam` assumes; `method.impl=last_layer` refuses it")


class NormedLinear(nn.Linear):
    """Cosine similarities between the features and each class's weight vector, in [-1, 1], no
    bias (Cao et al.'s released LDAM code: `NormedLinear`): the LDAM margin and scale assume
    logits of that range. Not a plain linear map, so `method.impl=last_layer` refuses it.

    Each class's weight vector starts at unit norm, as Cao et al.'s
    `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` leaves it (their weight is stored transposed):
    a cosine layer's angular step shrinks with 1/|w|^2, so uniform(-1, 1) vectors of norm
    sqrt(in_features / 3) would learn that many times slower."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


def make_head(in_features: int, num_classes: int, normed: bool) -> nn.Linear:
    return NormedLinear(in_features, num_classes) if normed else nn.Linear(in_features, num_classes)
