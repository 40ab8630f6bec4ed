import torch

from l2rw.losses import true_class_probability
from l2rw.run.options import number


class Focal:
    """Focal loss (Lin et al. 2017), softmax form: -(1 - p_y)^gamma log p_y. Easy examples (p_y
    near 1) count less."""

    def __init__(
        self, class_counts: torch.Tensor,
        gamma: number(ge=0, le=100, note=" (0: cross-entropy; Lin et al. use 2)",
                      doc="the focusing exponent: the larger, the less an example the model already gets right counts") = 2.0,
    ):
        self.gamma = gamma

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p, p = true_class_probability(outputs, targets)
        return -(1 - p).clamp(min=0).pow(self.gamma) * log_p
