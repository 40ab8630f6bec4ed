from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from l2rw.losses import ExampleStateLoss
from l2rw.run.options import number


class EarlyLearningRegularized(ExampleStateLoss):
    """Early-learning regularisation (Liu et al., NeurIPS 2020): cross-entropy + lam * log(1 - <t_i, p_i>),
    where t_i, a running average of example i's predictions t_i <- beta t_i + (1 - beta) p_i,
    holds the model to what it predicted before it memorised the noisy labels. As released
    (shengliu66/ELR, ELR/model/loss.py 11-29): p clamped to [1e-4, 1 - 1e-4]; t_i starts at 0,
    is updated with the step's detached, renormalised p_i before the regulariser reads it; one t
    per training example. Per example, the released batch mean is this loss's mean."""

    def __init__(
        self, class_counts: torch.Tensor,
        beta: number(ge=0, lt=1, note=" (Liu et al. use 0.7 on CIFAR-10, 0.9 on CIFAR-100)",
                     doc="the momentum of each example's target estimate: the larger, the longer it remembers") = 0.7,
        lam: number(ge=0, le=1000, note=" (Liu et al. use 3 on CIFAR-10, 7 on CIFAR-100)",
                    doc="the regulariser's factor") = 3.0,
    ):
        self.beta, self.lam = beta, lam
        self.targets = torch.zeros(int(class_counts.sum()), len(class_counts), device=class_counts.device)
        self._index: torch.Tensor | None = None
        self._estimate: torch.Tensor | None = None

    @contextmanager
    def batch(self, index: torch.Tensor) -> Iterator[None]:
        self._index, self._estimate = index, None
        try:
            yield
            if self._estimate is not None:
                self._keep(index, self._estimate.to(self.targets.dtype))
        finally:
            self._index, self._estimate = None, None

    def _keep(self, index: torch.Tensor, estimate: torch.Tensor) -> None:
        """targets[index] = estimate, an index drawn twice in a batch (a sampler with replacement)
        keeping its first row: a plain indexed write keeps the last on CPU and either on CUDA."""
        rows, where = torch.unique(index, return_inverse=True)
        first = torch.full_like(rows, len(index)).scatter_reduce(0, where, torch.arange(len(index), device=index.device), "amin")
        self.targets[rows] = estimate[first]

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._index is None:
            raise RuntimeError("loss=elr reads each example's target estimate: call it inside `batch(index)`")
        probabilities = torch.softmax(outputs, dim=1).clamp(1e-4, 1.0 - 1e-4)
        seen = probabilities.detach()
        self._estimate = self.beta * self.targets[self._index].to(seen.dtype) + (1 - self.beta) * seen / seen.sum(1, keepdim=True)
        regulariser = (1 - (self._estimate * probabilities).sum(1)).log()
        return F.cross_entropy(outputs, targets, reduction="none") + self.lam * regulariser

    def state_dict(self) -> dict:
        return {"targets": self.targets}

    def load_state_dict(self, state: dict) -> None:
        targets = state.get("targets") if isinstance(state, dict) else None
        if not (isinstance(targets, torch.Tensor) and targets.dtype == self.targets.dtype and targets.shape == self.targets.shape
                and bool(torch.isfinite(targets).all()) and bool(((targets >= 0) & (targets <= 1)).all())):
            rows, classes = self.targets.shape
            raise ValueError(f"its ELR targets are not {rows} training examples' probabilities over {classes} classes")
        self.targets = targets.to(self.targets.device)
