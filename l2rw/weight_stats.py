"""Where the example weights go between two evaluations: clean vs corrupted examples, and per class.

The diagnostic that reweighting works under label noise: corrupted examples should get ~0 weight.
Weights are reported relative to uniform (weight x batch size), so 1 means "as plain SGD" and
0 means "ignored", whatever the batch size. Only steps that updated the model count: a skipped
step (all weights 0) says nothing about clean vs noisy, and is counted in `skipped_steps`.
"""
from __future__ import annotations

import torch


class WeightStats:
    """Accumulates each step's weights on the training device; `columns` and `flush` give one
    metrics row's worth of mean weights (empty when a group had no example in the window)."""

    def __init__(self, labels: torch.Tensor, corrupted: torch.Tensor, class_names: list[str]):
        self.labels = labels  # the labels the method saw (noisy ones included)
        self.corrupted = corrupted.long()
        self.columns = ["weight_clean", "weight_noisy"] + [f"weight_class_{name}" for name in class_names]
        self.sums = torch.zeros(2 + len(class_names), dtype=torch.float64, device=labels.device)
        self.counts = torch.zeros_like(self.sums)

    def add(self, index: torch.Tensor, weights: torch.Tensor) -> None:
        relative = weights.detach().double() * len(weights)
        # slot 0/1: clean/noisy, then one slot per class; index_add keeps this free of host syncs
        slots = torch.cat([self.corrupted[index], 2 + self.labels[index]])
        self.sums.index_add_(0, slots, relative.repeat(2))
        self.counts.index_add_(0, slots, torch.ones_like(relative).repeat(2))

    def flush(self) -> dict[str, float | str]:
        means = (self.sums / self.counts).tolist()
        counts = self.counts.tolist()
        self.sums.zero_()
        self.counts.zero_()
        return {column: mean if count else "" for column, mean, count in zip(self.columns, means, counts)}

    def state_dict(self) -> dict:
        """The window so far, for checkpoints taken between two evaluations."""
        return {"sums": self.sums.cpu(), "counts": self.counts.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
