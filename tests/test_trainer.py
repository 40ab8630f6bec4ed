"""`fit`'s step timing: each process's first step (compiling, warming up) is counted apart."""
import types

import torch

from l2rw import trainer
from l2rw.data import build_splits
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.train import make_optimizer, make_scheduler


class Clock:
    """Stands in for time.perf_counter: only steps move it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TimedSGD(Method):
    """Plain SGD whose first step takes 10 clock seconds and every later one 1."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.calls = 0

    def step_loss(self, *args, **kwargs):
        self.calls += 1
        self.clock.now += 10.0 if self.calls == 1 else 1.0
        return super().step_loss(*args, **kwargs)


def test_seconds_per_step_leave_out_the_first_step_and_evaluation(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("steps=5", "eval_every=2")
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    clock = Clock()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    outcome = trainer.fit(
        model, TimedSGD(clock), splits, optimizer, make_scheduler(optimizer, cfg.schedule, cfg.steps),
        steps=5, batch_size=cfg.batch_size, eval_every=2, generator=torch.Generator().manual_seed(0),
        metrics_csv=tmp_path / "metrics.csv", progress=False,
    )
    assert outcome["warmup_seconds"] == 10.0
    assert outcome["seconds_per_step"] == 1.0  # 4 steady steps in 14 - 10 seconds
