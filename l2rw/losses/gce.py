import torch

from l2rw.losses import true_class_probability
from l2rw.run.options import number


class GeneralizedCrossEntropy:
    """Generalized cross-entropy (Zhang and Sabuncu 2018), (1 - p_y^q) / q: between cross-entropy
    and the noise-robust mean absolute error."""

    def __init__(
        self, class_counts: torch.Tensor,
        q: number(gt=0, le=1, note=" (Zhang and Sabuncu use 0.7)",
                  doc="the exponent: cross-entropy as q -> 0, mean absolute error at 1, so the larger, the more "
                      "robust to noisy labels") = 0.7,
    ):
        self.q = q

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _, p = true_class_probability(outputs, targets)
        return (1 - p.pow(self.q)) / self.q
