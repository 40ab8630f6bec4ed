"""Post-hoc logit adjustment: the prior a run trained on, measured from its weights, and the
evaluation's shifted argmax."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages, build_splits
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.run.train import train
from l2rw.training import loop as training_loop
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.evaluation import PixelStandardizer, evaluate
from l2rw.training.loop import FitOptions
from l2rw.training.optimization import make_optimizer, make_scheduler
from l2rw.training.trained_prior import SMALLEST_SHARE, TrainedPrior


def test_uniform_weights_give_the_label_frequencies_and_class_weights_a_uniform_prior():
    labels = torch.tensor([0, 0, 0, 1])
    sgd, balanced = TrainedPrior(3, torch.device("cpu")), TrainedPrior(3, torch.device("cpu"))
    for _ in range(50):
        sgd.add(labels, torch.full((4,), 0.25), lr=0.1)
        balanced.add(labels, torch.tensor([1 / 6, 1 / 6, 1 / 6, 0.5]), lr=0.1)
    torch.testing.assert_close(sgd.shares(), torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(balanced.shares(), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    # tau * -log(share); a class never weighted is raised to SMALLEST_SHARE, so it stays finite
    expected = torch.tensor([-math.log(0.75), -math.log(0.25), -math.log(SMALLEST_SHARE)]) * 2
    torch.testing.assert_close(sgd.adjustment(2.0), expected)
    assert sgd.adjustment(0.0) is None and TrainedPrior(3, torch.device("cpu")).adjustment(1.0) is None


def test_each_step_counts_by_its_learning_rate():
    """Weights on class 0 at lr 0.3, then as many steps on class 1 at lr 0.1: the model moved three
    times as far towards class 0."""
    prior = TrainedPrior(2, torch.device("cpu"))
    for _ in range(10):
        prior.add(torch.tensor([0]), torch.tensor([1.0]), lr=0.3)
    for _ in range(10):
        prior.add(torch.tensor([1]), torch.tensor([1.0]), lr=0.1)
    torch.testing.assert_close(prior.shares(), torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_evaluation_takes_the_argmax_of_the_shifted_logits():
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1) * 30
    data = LabeledImages(images, torch.tensor([0, 1, 0, 1, 0, 1, 0, 1]))
    standardize = PixelStandardizer.of(images)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[1].bias.zero_()
    logits = model(standardize(images))
    shift = torch.tensor([0.0, 1.5])
    expected = (logits + shift).argmax(1)
    evaluation = evaluate(model, data, standardize, 2, shift)
    assert evaluation.confusion.diag().sum().item() == (expected == data.labels).sum().item()
    assert not torch.equal(expected, logits.argmax(1))  # the shift changed some predictions


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgd", "class_balanced"])
def test_a_runs_trained_prior_is_its_weights_class_shares(make_cfg, tmp_path, method):
    cfg = make_cfg(f"method={method}", "imbalance=0.8", "steps=60", "posthoc_tau=1")
    row = train(cfg, tmp_path / "run")
    shares = torch.tensor([float(v) for v in row["trained_prior"].split()])
    counts = torch.bincount(build_splits(cfg).train.labels, minlength=10).double()
    expected = counts / counts.sum() if method == "sgd" else torch.full((10,), 0.1, dtype=torch.float64)
    assert (shares - expected).abs().max() < 0.06, (shares, expected)
    assert row["posthoc_tau"] == 1


class RecordsBatches(Method):
    """Plain SGD that keeps each step's labels and weights."""

    def __init__(self):
        self.seen = []

    def step_loss(self, model, x, y, index, lr):
        result = super().step_loss(model, x, y, index, lr)
        self.seen.append((y.clone(), result.weights.detach().clone()))
        return result


def fit_digits(cfg, tmp_path, method: Method, steps: int, schedule: str = "constant", checkpoint: Checkpoint | None = None):
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    return training_loop.fit(
        model, method, splits, optimizer, make_scheduler(optimizer, schedule, steps),
        FitOptions(steps=steps, batch_size=50, eval_every=steps, progress=False), metrics_csv=tmp_path / "metrics.csv",
        checkpoint=checkpoint,
    )


def scheduled_lrs(base_lr: float, schedule: str, steps: int) -> list[float]:
    """The lr of each step, read from a scheduler of its own."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(optimizer, schedule, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_the_loop_counts_each_step_by_its_scheduled_lr(make_cfg, tmp_path, monkeypatch):
    """The prior's mass of a class: over the steps, the lr the schedule set for the step times the
    weight the step gave the class's examples."""
    built = []

    def recorded(*args):
        built.append(TrainedPrior(*args))
        return built[-1]

    monkeypatch.setattr(training_loop, "TrainedPrior", recorded)
    cfg = make_cfg("imbalance=0.5")
    method = RecordsBatches()
    fit_digits(cfg, tmp_path, method, steps=4, schedule="step")

    lrs = scheduled_lrs(cfg.lr, "step", 4)
    assert len(set(lrs)) > 1  # the schedule moves, so a wrong lr shows
    expected = torch.zeros(10, dtype=torch.float64)
    for lr, (labels, weights) in zip(lrs, method.seen, strict=True):
        expected += lr * torch.bincount(labels, weights.double(), minlength=10)
    torch.testing.assert_close(built[0].mass, expected)


class CountsSteps(Method):
    """Plain SGD that counts the steps it takes."""

    def __init__(self):
        self.steps_taken = 0

    def step_loss(self, *args, **kwargs):
        self.steps_taken += 1
        return super().step_loss(*args, **kwargs)


def test_a_resumed_run_keeps_the_prior_of_the_steps_before_its_checkpoint(make_cfg, tmp_path):
    """A run resumed from step 3 of 6 ends with the prior of all six steps, not of its last three."""
    cfg = make_cfg("imbalance=0.5")
    checkpoint = Checkpoint(tmp_path, every=3, config_hash="digits", steps=6)
    whole = fit_digits(cfg, tmp_path, Method(), steps=6, checkpoint=checkpoint)  # leaves its step-3 checkpoint
    resumed_method = CountsSteps()
    resumed = fit_digits(cfg, tmp_path, resumed_method, steps=6, checkpoint=checkpoint)
    assert resumed_method.steps_taken == 3
    assert resumed.trained_prior == whole.trained_prior


def predicted_per_class(run_dir) -> pd.Series:
    return pd.read_csv(run_dir / "confusion.csv", index_col=0).sum()


@pytest.mark.slow
def test_the_posthoc_recipe_moves_test_predictions_off_the_trained_majority(make_cfg, tmp_path):
    """sgd_posthoc trains as sgd_ce does and shifts the logits by -log(prior): the majority class
    (the largest share, so the smallest shift) can only lose predictions, and with 90% of the
    weight it does."""
    rows = {recipe: train(make_cfg(f"+recipe={recipe}", "imbalance=0.9"), tmp_path / recipe) for recipe in ("sgd_ce", "sgd_posthoc")}
    assert (rows["sgd_ce"]["posthoc_tau"], rows["sgd_posthoc"]["posthoc_tau"]) == (0.0, 1.0)
    assert rows["sgd_ce"]["trained_prior"] == rows["sgd_posthoc"]["trained_prior"]
    majority = max(range(10), key=lambda c: float(rows["sgd_ce"]["trained_prior"].split()[c]))
    plain, adjusted = (predicted_per_class(tmp_path / recipe).iloc[majority] for recipe in ("sgd_ce", "sgd_posthoc"))
    assert adjusted < plain
