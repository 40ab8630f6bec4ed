import math

import torch
import torch.nn.functional as F

from l2rw.run.options import number

# The released code clamps the one-hot label at 1e-4 before its log (Wang et al.'s
# symmetric_cross_entropy_for_noisy_labels, loss.py 18; SCELoss-Reproduce, loss.py 22), so log 0
# becomes ln 1e-4 = -9.21, although the paper writes A = -4
RELEASED_LOG_ZERO = math.log(1e-4)


class SymmetricCrossEntropy:
    """Symmetric cross-entropy (Wang et al., ICCV 2019): alpha * cross-entropy + beta * reverse
    cross-entropy -sum_k p_k log q_k, with q the one-hot label whose log 0 is the constant A
    (`log_zero`), so the reverse term is -A (1 - p_y), bounded and robust to noisy labels. As
    released (SCELoss-Reproduce, loss.py 14-27): p clamped to [1e-7, 1] in the reverse term only."""

    def __init__(
        self, class_counts: torch.Tensor,
        alpha: number(ge=0, le=100, note=" (Wang et al. use 0.1 on CIFAR-10)",
                      doc="the factor on cross-entropy") = 0.1,
        beta: number(ge=0, le=100, note=" (Wang et al. use 1 on CIFAR-10)",
                     doc="the factor on the reverse cross-entropy") = 1.0,
        log_zero: number(ge=-100, lt=0, note=" (the released code's ln 1e-4 = -9.21; the paper writes -4)",
                         doc="A, the value log 0 takes in the reverse term: it scales that term") = RELEASED_LOG_ZERO,
    ):
        self.alpha, self.beta, self.log_zero = alpha, beta, log_zero

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(outputs, dim=1).clamp(min=1e-7, max=1.0)
        label = F.one_hot(targets, outputs.shape[1]).bool()
        reverse = -(probabilities * torch.where(label, 0.0, self.log_zero)).sum(1)
        return self.alpha * F.cross_entropy(outputs, targets, reduction="none") + self.beta * reverse
