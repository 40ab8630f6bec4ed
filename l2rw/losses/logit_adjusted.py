import torch
import torch.nn.functional as F

from l2rw.losses import class_prior
from l2rw.run.options import number


class LogitAdjusted:
    """Logit-adjusted cross-entropy (Menon et al. 2021): cross-entropy of logits + tau * log(prior),
    the prior being the training set's class frequencies. Only training sees the shift: the model's
    plain argmax is then a balanced classifier, so evaluation needs nothing special."""

    def __init__(
        self, class_counts: torch.Tensor,
        tau: number(ge=0, le=100, note=" (0: cross-entropy; Menon et al. use 1)",
                    doc="the factor on the log class prior added to the training logits") = 1.0,
    ):
        self.adjustment = tau * class_prior(class_counts).log()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs + self.adjustment.to(outputs.dtype), targets, reduction="none")
