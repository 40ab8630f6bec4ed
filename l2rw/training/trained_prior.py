"""The class prior a run trained on, for post-hoc logit adjustment at evaluation.

A model trained on a class distribution pi scores log p(y|x) ~ log p_balanced(y|x) + log pi(y);
Menon et al. (2021) predict argmax_y logits_y - tau * log pi(y) to undo it. Which pi a run trains
on depends on its method: plain SGD sees the training labels' frequencies, a class-balanced loss
about a uniform prior, L2RW and Meta-Weight-Net whatever their weights give each class, which
changes as they train. So the prior is measured, not assumed: each class's share of the example
weights summed over the run, each step counted by its learning rate, as the step moved the model
by that much (with a cosine schedule the last steps barely move it, whatever their weights).
"""
import math

import torch

# Shares below this are raised to it, so a class the weights ignored shifts by at most tau * ln 1000
SMALLEST_SHARE = 1e-3


class TrainedPrior:
    def __init__(self, num_classes: int, device: torch.device, mass: list[float] | None = None):
        self.mass = torch.tensor(mass or [0.0] * num_classes, dtype=torch.float64, device=device)

    def add(self, labels: torch.Tensor, weights: torch.Tensor, lr: float) -> None:
        """One step's weights at its learning rate (no host sync)."""
        self.mass.index_add_(0, labels, weights.detach().double(), alpha=lr)

    def shares(self) -> torch.Tensor:
        return self.mass / self.mass.sum().clamp(min=torch.finfo(torch.float64).tiny)

    def adjustment(self, tau: float) -> torch.Tensor | None:
        """What to add to the logits at evaluation: -tau * log(prior); None for tau = 0 or before any step."""
        if tau == 0 or self.mass.sum() == 0:
            return None
        return (-tau * self.shares().clamp(min=SMALLEST_SHARE).log()).float()

    def state(self) -> list[float]:
        return self.mass.tolist()

    def state_problem(self, mass: object) -> str | None:
        """Why `mass` cannot be `state()` of this prior's classes; None when it can."""
        if not (isinstance(mass, list) and len(mass) == len(self.mass)
                and all(type(m) in (int, float) and math.isfinite(m) and m >= 0 for m in mass)):
            return f"not {len(self.mass)} class masses >= 0, one per class"
        return None
