"""metrics.csv's weight diagnostics: clean/noisy and per-class means relative to uniform."""
import pandas as pd
import pytest
import torch

from l2rw.methods.base import Method, StepLoss
from l2rw.train import train
from l2rw.weight_stats import WeightStats


def test_means_are_relative_to_uniform_and_reset_at_each_flush():
    labels = torch.tensor([0, 0, 1, 1])
    stats = WeightStats(labels, torch.tensor([False, True, False, True]), ["a", "b"])
    stats.add(torch.tensor([0, 1, 2, 3]), torch.tensor([0.4, 0.0, 0.6, 0.0]))  # x4: 1.6, 0, 2.4, 0
    stats.add(torch.tensor([0, 2]), torch.tensor([0.5, 0.5]))                   # x2: 1, 1
    row = stats.flush()
    assert row == pytest.approx({
        "weight_clean": (1.6 + 2.4 + 1 + 1) / 4, "weight_noisy": 0.0,
        "weight_class_a": (1.6 + 0 + 1) / 3, "weight_class_b": (2.4 + 0 + 1) / 3,
    })
    stats.add(torch.tensor([0, 2]), torch.tensor([0.25, 0.75]))
    assert stats.flush() == pytest.approx({
        "weight_clean": 1.0, "weight_noisy": "", "weight_class_a": 0.5, "weight_class_b": 1.5,
    })


def test_metrics_csv_carries_the_weight_columns(make_cfg, tmp_path):
    train(make_cfg("method=sgd", "imbalance=0.5", "noise.kind=uniform", "noise.rate=0.3"), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    weights = metrics.filter(like="weight_").drop(columns="zero_weight_share")
    assert len(weights.columns) == 2 + 10
    assert (weights - 1).abs().max().max() < 1e-6  # plain SGD weights every example 1/batch
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert (row.noise_kind, row.noise_rate) == ("uniform", 0.3) and row.train_corrupted > 0


class SkipsEveryOtherStep(Method):
    """Plain SGD, but every other step gives every example weight 0 (a skipped step)."""

    def setup(self, *args, **run):
        super().setup(*args, **run)
        self.steps_taken = 0

    def step_loss(self, model, x, y, index, lr):
        self.steps_taken += 1
        result = super().step_loss(model, x, y, index, lr)
        return result if self.steps_taken % 2 else StepLoss(result.loss * 0, torch.zeros_like(result.weights))


def test_skipped_steps_do_not_pull_the_means_to_zero(make_cfg, tmp_path):
    cfg = make_cfg(f"method._target_={__name__}.SkipsEveryOtherStep", "imbalance=0.5")
    row = train(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert row["skipped_steps"] == 10
    assert metrics.weight_clean.tolist() == pytest.approx([1.0, 1.0])  # not 0.5: only the steps that trained
