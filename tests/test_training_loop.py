"""l2rw.training.loop: step timing (warm-up steps counted apart), the lr schedule over skipped steps,
gradient clipping, and collapse that is never silent."""
import types
import warnings

import pandas as pd
import pytest
import torch

from l2rw.data import build_splits
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.run.train import train
from l2rw.training import evaluation
from l2rw.training import loop as training_loop
from l2rw.training.loop import FitOptions
from l2rw.training.optimization import make_optimizer, make_scheduler
from l2rw.training.state import FitResult


class Clock:
    """Stands in for time.perf_counter: only steps and evaluations move it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TimedSGD(Method):
    """Plain SGD whose first `warmup_steps` steps take 10 clock seconds each, later ones 1."""

    def __init__(self, clock: Clock, warmup_steps: int):
        self.clock = clock
        self.warmup_steps = warmup_steps
        self.calls = 0

    def step_loss(self, *args, **kwargs):
        self.calls += 1
        self.clock.now += 10.0 if self.calls <= self.warmup_steps else 1.0
        return super().step_loss(*args, **kwargs)


def timed_fit(make_cfg, tmp_path, monkeypatch, steps: int, warmup_steps: int) -> "FitResult":
    cfg = make_cfg()
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    clock = Clock()
    monkeypatch.setattr(training_loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def slow_evaluate(*args):
        clock.now += 100.0
        return evaluate(*args)

    evaluate = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", slow_evaluate)
    return training_loop.fit(
        model, TimedSGD(clock, warmup_steps), splits, optimizer, make_scheduler(optimizer, cfg.schedule, steps),
        FitOptions(steps=steps, batch_size=cfg.batch_size, eval_every=2, progress=False), metrics_csv=tmp_path / "metrics.csv",
    )


@pytest.mark.parametrize("warmup_steps", [1, 3])
def test_seconds_per_step_leave_out_the_warmup_steps_and_evaluation(make_cfg, tmp_path, monkeypatch, warmup_steps):
    outcome = timed_fit(make_cfg, tmp_path, monkeypatch, steps=6, warmup_steps=warmup_steps)
    assert outcome.warmup_seconds == 10.0 * warmup_steps
    assert outcome.seconds_per_step == 1.0


def test_a_run_of_warmup_steps_only_gets_their_pace(make_cfg, tmp_path, monkeypatch):
    outcome = timed_fit(make_cfg, tmp_path, monkeypatch, steps=1, warmup_steps=1)
    assert outcome.warmup_seconds == outcome.seconds_per_step == 10.0


class SkipsFirstSteps(Method):
    """Plain SGD whose first `skipped` steps give every example weight 0."""

    def __init__(self, skipped: int):
        self.skipped = skipped
        self.calls = 0

    def step_loss(self, *args, **kwargs):
        self.calls += 1
        result = super().step_loss(*args, **kwargs)
        if self.calls <= self.skipped:
            result.weights = torch.zeros_like(result.weights)
        return result


def test_skipped_steps_move_the_schedule_on_without_torchs_warning(make_cfg, tmp_path):
    cfg = make_cfg()
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, "cosine", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()" would raise
        outcome = training_loop.fit(
            model, SkipsFirstSteps(2), splits, optimizer, scheduler,
            FitOptions(steps=4, batch_size=cfg.batch_size, eval_every=4, progress=False), metrics_csv=tmp_path / "metrics.csv",
        )
    assert outcome.skipped_steps == 2
    assert scheduler.last_epoch == 4 and optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_clip_grad_norm_bounds_each_update(make_cfg, tmp_path):
    """With a tiny clip, each SGD step moves the parameters by at most lr x clip."""
    cfg = make_cfg("clip_grad_norm=0.01", "lr=0.1", "momentum=0", "weight_decay=0", "steps=1", "eval_every=1")
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = make_optimizer(model, cfg)
    training_loop.fit(model, Method(), splits, optimizer, make_scheduler(optimizer, "constant", 1),
                      FitOptions(steps=1, batch_size=50, eval_every=1, progress=False, clip_grad_norm=cfg.clip_grad_norm),
                      metrics_csv=tmp_path / "m.csv")
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() == pytest.approx(0.1 * 0.01, rel=1e-3)


# --- collapse ------------------------------------------------------------------------------------

class TurnsToOneClass(Method):
    """Plain SGD that, after `healthy_steps`, trains on labels replaced by class 0: a model forced
    to collapse after learning."""

    def __init__(self, healthy_steps: int):
        self.healthy_steps, self.steps = healthy_steps, 0

    def step_loss(self, model, x, y, index, lr):
        self.steps += 1
        return super().step_loss(model, x, y if self.steps <= self.healthy_steps else torch.zeros_like(y), index, lr)


def test_uniform_outputs_count_as_collapse_whatever_the_argmax():
    confusion = torch.eye(3, dtype=torch.long) * 3 + 2  # predictions spread over every class
    assert evaluation.collapse_symptom(evaluation.Evaluation(0.3, 0.3, [0.3] * 3, confusion, 0.9), ["a", "b", "c"]) is None
    uniform = evaluation.Evaluation(0.3, 0.3, [0.3] * 3, confusion, 1 / 3 + 0.001)
    assert "the outputs are uniform" in evaluation.collapse_symptom(uniform, ["a", "b", "c"])


def test_a_model_right_on_some_classes_and_wrong_on_others_is_not_collapsed():
    """Confident outputs score a loss near ln K when half of them are right and half badly wrong;
    the outputs are not uniform, so it is no collapse (the flag once read the loss)."""
    confusion = torch.tensor([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 0, 5], [0, 0, 5, 0]])
    scores = evaluation.Evaluation(0.5, 0.5, [1, 1, 0, 0], confusion, 0.95)
    assert evaluation.collapse_symptom(scores, list("abcd")) is None


@pytest.mark.slow
def test_a_healthy_run_is_not_flagged(make_cfg, tmp_path, capsys):
    row = train(make_cfg("imbalance=0.5", "steps=300", "eval_every=100"), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert row["collapsed_step"] == "" and metrics.collapsed.iloc[-1] == 0
    assert "collapsed" not in capsys.readouterr().err
    assert row["balanced_accuracy"] > 0.3  # chance is 0.1


@pytest.mark.slow
def test_a_forced_collapse_is_flagged_with_its_step_in_the_row_and_warned_of_twice(make_cfg, tmp_path, capsys):
    """A model that learned for 100 steps, then trained on class 0 only: healthy at steps 50 and
    100, collapsed at 150 and 200."""
    cfg = make_cfg(f"method._target_={__name__}.TurnsToOneClass", "+method.healthy_steps=100", "imbalance=0.1",
                   "lr=0.05", "momentum=0.9", "schedule=constant", "steps=200", "eval_every=50", "batch_size=50")
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["collapsed_step"] == 150
    assert pd.read_csv(tmp_path / "results.csv").collapsed_step.tolist() == [150]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics.collapsed.tolist() == [0, 0, 1, 1] and metrics.top_class_share.iloc[-1] >= 0.9
    err = capsys.readouterr().err
    assert "warning: collapsed at step 150: " in err  # when it starts
    assert f"warning: this run ended collapsed (since step 150): its model predicts (nearly) one class or uniform outputs; " \
           f"see {tmp_path / 'run' / 'metrics.csv'}" in err  # and at the end
