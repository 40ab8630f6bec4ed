"""Where the example weights go: between two evaluations, clean vs corrupted examples and per
class (metrics.csv); over the whole run, each training example (example_weights.csv).

The diagnostic that reweighting works under label noise: corrupted examples should get ~0 weight.
Weights are reported relative to uniform (weight x batch size), so 1 means "as plain SGD" and
0 means "ignored", whatever the batch size. Only steps that updated the model count: a skipped
step (all weights 0) says nothing about clean vs noisy, and is counted in `skipped_steps`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from l2rw.file_io import write_csv


def weight_columns(class_names: list[str]) -> list[str]:
    """metrics.csv's mean weight columns: clean, noisy, then one per class."""
    return ["weight_clean", "weight_noisy"] + [f"weight_class_{name}" for name in class_names]


class WeightStats:
    """Accumulates each step's weights on the training device; `columns` and `flush` give one
    metrics row's worth of mean weights (empty when a group had no example in the window)."""

    STATE = ("sums", "counts", "example_sums", "example_steps", "example_zeros")

    def __init__(self, labels: torch.Tensor, corrupted: torch.Tensor, class_names: list[str], paths: list[str] | None = None):
        self.class_names = class_names
        if paths is not None and len(paths) != len(labels):  # found now, not when the run ends and writes them
            raise ValueError(f"{len(paths)} paths for {len(labels)} training examples")
        self.paths = paths  # each training example's image file, for a dataset of files; None for one without
        self.labels = labels  # the labels the method saw (noisy ones included)
        self.corrupted = corrupted.long()
        self.columns = weight_columns(class_names)
        self.sums = torch.zeros(2 + len(class_names), dtype=torch.float64, device=labels.device)
        self.counts = torch.zeros_like(self.sums)
        # per training example over the run: summed relative weight, steps seen, steps at weight 0
        self.example_sums = torch.zeros(len(labels), dtype=torch.float64, device=labels.device)
        self.example_steps = torch.zeros_like(self.example_sums)
        self.example_zeros = torch.zeros_like(self.example_sums)

    def add(self, index: torch.Tensor, weights: torch.Tensor) -> None:
        relative = weights.detach().double() * len(weights)
        # slot 0/1: clean/noisy, then one slot per class; index_add keeps this free of host syncs
        slots = torch.cat([self.corrupted[index], 2 + self.labels[index]])
        self.sums.index_add_(0, slots, relative.repeat(2))
        self.counts.index_add_(0, slots, torch.ones_like(relative).repeat(2))
        self.example_sums.index_add_(0, index, relative)
        self.example_steps.index_add_(0, index, torch.ones_like(relative))
        self.example_zeros.index_add_(0, index, (relative == 0).double())

    def flush(self) -> dict[str, float | str]:
        means = (self.sums / self.counts).tolist()
        counts = self.counts.tolist()
        self.sums.zero_()
        self.counts.zero_()
        return {column: mean if count else "" for column, mean, count in zip(self.columns, means, counts)}

    def example_means(self) -> torch.Tensor:
        """Each training example's mean relative weight so far, on the CPU (NaN: in no update yet)."""
        return (self.example_sums / self.example_steps).cpu()

    def write_examples(self, path) -> None:
        """example_weights.csv: one row per training example (its position in the training set),
        its class (the label the method saw), whether noise corrupted that label, its mean relative
        weight over the steps that updated the model with it in the batch (1 = uniform; empty when
        none did) and the share of those steps in which its weight was 0. With paths, each row's
        `path` (after `index`) names its image file."""
        steps = self.example_steps.cpu()
        mean = self.example_means().tolist()
        zero_share = (self.example_zeros.cpu() / steps).tolist()
        rows = [
            [i, self.class_names[label], corrupted, *((f"{mean[i]:.6g}", f"{zero_share[i]:.6g}") if n else ("", "")), int(n)]
            for i, (label, corrupted, n) in enumerate(zip(self.labels.tolist(), self.corrupted.tolist(), steps.tolist()))
        ]
        columns = ["index", "class", "corrupted", "mean_weight", "zero_share", "steps_seen"]
        if self.paths is not None:
            columns.insert(1, "path")
            rows = [[row[0], file, *row[1:]] for row, file in zip(rows, self.paths)]
        write_csv(Path(path), columns, rows)

    def state_dict(self) -> dict:
        """The window and the per-example sums so far, for checkpoints."""
        return {name: getattr(self, name).cpu() for name in self.STATE}

    def state_problem(self, state: object) -> str | None:
        """Why `state` cannot be this one's `state_dict` (of this training set and its classes); None when it can."""
        if not isinstance(state, dict) or state.keys() != set(self.STATE):
            return f"not the {', '.join(self.STATE)} sums"
        for name, ours in self.state_dict().items():
            saved = state[name]
            if not (isinstance(saved, torch.Tensor) and saved.shape == ours.shape and saved.dtype == ours.dtype):
                return f"{name} is not {len(ours)} float64 sums"
        return None

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])
