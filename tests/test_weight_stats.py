"""l2rw.training.weight_stats: metrics.csv's weight diagnostics (clean/noisy and per-class means relative to
uniform) and example_weights.csv (each training example's mean weight over the run)."""
import pandas as pd
import pytest
import torch

from l2rw.methods.base import Method, StepLoss
from l2rw.run.train import train
from l2rw.training.weight_stats import WeightStats


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_skipped_steps_do_not_pull_the_means_to_zero(make_cfg, tmp_path):
    cfg = make_cfg(f"method._target_={__name__}.SkipsEveryOtherStep", "imbalance=0.5")
    row = train(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert row["skipped_steps"] == 10
    assert metrics.weight_clean.tolist() == pytest.approx([1.0, 1.0])  # not 0.5: only the steps that trained


def test_example_weights_are_the_means_of_the_weights_each_example_got(tmp_path):
    stats = WeightStats(torch.tensor([0, 1, 1]), torch.tensor([False, True, False]), ["a", "b"])
    stats.add(torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))  # relative: 2, 0
    stats.add(torch.tensor([0, 2]), torch.tensor([0.25, 0.75]))  # relative: 0.5, 1.5
    stats.flush()  # a metrics window ends; the per-example sums go on
    stats.add(torch.tensor([1, 2]), torch.tensor([0.5, 0.5]))  # relative: 1, 1
    stats.write_examples(tmp_path / "w.csv")
    assert (tmp_path / "w.csv").read_text().splitlines() == [
        "index,class,corrupted,mean_weight,zero_share,steps_seen",
        "0,a,0,1.25,0,2",
        "1,b,1,0.5,0.5,2",
        "2,b,0,1.25,0,2",
    ]



def test_example_weights_csv_keeps_its_columns_whatever_the_class_names_hold(tmp_path):
    names = ['a,b', 'say "hi"', "two\nlines"]
    stats = WeightStats(torch.tensor([0, 1, 2]), torch.tensor([False, False, True]), names)
    stats.add(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]))
    stats.write_examples(tmp_path / "w.csv")
    table = pd.read_csv(tmp_path / "w.csv")
    assert table["class"].tolist() == names and table.corrupted.tolist() == [0, 0, 1]
    assert table.steps_seen.tolist() == [1, 1, 0] and table.mean_weight.tolist()[:2] == [1, 1]

@pytest.mark.slow
def test_a_runs_example_weights_csv_holds_every_example_and_the_weights_its_steps_used(make_cfg, tmp_path):
    row = train(make_cfg("method=l2rw", "imbalance=0.5", "noise.kind=uniform", "noise.rate=0.3", "steps=30"), tmp_path / "run")
    examples = pd.read_csv(tmp_path / "run" / "example_weights.csv")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(examples) == row["train_size"] and examples["index"].tolist() == list(range(row["train_size"]))
    assert examples.corrupted.sum() == row["train_corrupted"] and len(metrics) == 3
    seen = examples[examples.steps_seen > 0]
    # every step's relative weights average 1 over its batch, so the steps_seen-weighted mean is 1
    assert (seen.mean_weight * seen.steps_seen).sum() / seen.steps_seen.sum() == pytest.approx(1.0)
    assert seen.steps_seen.sum() == (30 - row["skipped_steps"]) * 100  # batch 100, skipped steps not counted
    # each example's zero weights are a whole number of steps, and all of them together are the
    # zero entries metrics.csv counts in the batches that trained (a skipped step's are all zeros)
    zero_steps = seen.zero_share * seen.steps_seen
    assert (zero_steps - zero_steps.round()).abs().max() < 1e-3
    window_steps = metrics.step.diff().fillna(metrics.step.iloc[0])
    zeros_in_batches = (metrics.zero_weight_share * window_steps * 100).sum() - row["skipped_steps"] * 100
    assert zero_steps.round().sum() == pytest.approx(zeros_in_batches, abs=1e-3) and zeros_in_batches > 0


def test_example_weights_name_each_examples_file_right_after_its_index_when_there_are_files(tmp_path):
    paths = ["train/a/0.png", "train/b/x,y.png"]  # a comma in a file name keeps its column
    stats = WeightStats(torch.tensor([0, 1]), torch.tensor([False, True]), ["a", "b"], paths)
    stats.add(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]))
    stats.write_examples(tmp_path / "w.csv")
    table = pd.read_csv(tmp_path / "w.csv")
    assert list(table.columns) == ["index", "path", "class", "corrupted", "mean_weight", "zero_share", "steps_seen"]
    assert table.path.tolist() == paths and table["class"].tolist() == ["a", "b"] and table.mean_weight.tolist() == [1, 1]
    with pytest.raises(ValueError, match="1 paths for 2 training examples"):
        WeightStats(torch.tensor([0, 1]), torch.tensor([False, True]), ["a", "b"], paths[:1])
