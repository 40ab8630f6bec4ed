"""The optimizer and lr schedule (l2rw/training/optimization.py): Cao et al.'s LDAM-DRW protocol step by
step against their released rule, the older schedules, and Nesterov reaching SGD."""
import pytest
import torch

from l2rw.training.optimization import LrSchedule, lr_schedule, make_optimizer, make_scheduler, steps_per_epoch


def cao_lr(epoch: int, base: float) -> float:
    """kaidic/LDAM-DRW cifar_train.py `adjust_learning_rate`, as released (epoch counted from 0)."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


def lrs_of(schedule: LrSchedule, base: float = 0.1) -> list[float]:
    """The lr each of the schedule's steps trains at, read from a real optimizer as fit reads it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = make_scheduler(optimizer, schedule)
    lrs = []
    for _ in range(schedule.steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cao_protocol_trains_each_epoch_at_the_released_lr(make_cfg):
    cfg = make_cfg("+experiment=cifar10_lt_baselines")
    per_epoch = 3
    cfg.steps = cfg.epochs * per_epoch
    lrs = lrs_of(lr_schedule(cfg, cfg.steps, per_epoch), cfg.lr)
    for epoch in range(cfg.epochs):
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            assert lrs[step] == pytest.approx(cao_lr(epoch, cfg.lr), rel=1e-12), (epoch, step)


@pytest.mark.parametrize("epoch, multiplier", [(0, 0.2), (4, 1.0), (5, 1.0), (159, 1.0), (160, 0.01), (179, 0.01), (180, 1e-4)])
def test_the_protocols_boundaries(epoch, multiplier):
    schedule = LrSchedule("multistep", 200 * 7, 7, 5, (160, 180), (0.01, 0.0001))
    assert schedule.multiplier(epoch * 7) == schedule.multiplier(epoch * 7 + 6) == pytest.approx(multiplier)
    assert schedule.first_drop == 160 * 7


def test_cosine_and_step_keep_their_shapes():
    cosine = lrs_of(LrSchedule("cosine", 4), base=1.0)
    assert cosine == pytest.approx([1.0, 0.5 * (1 + 2**-0.5), 0.5, 0.5 * (1 - 2**-0.5)])
    step = lrs_of(LrSchedule("step", 8), base=1.0)
    assert step == pytest.approx([1.0] * 4 + [0.1] * 2 + [0.01] * 2)
    assert lrs_of(LrSchedule("constant", 3), base=0.3) == pytest.approx([0.3] * 3)
    assert LrSchedule("step", 8).first_drop == 4 and LrSchedule("cosine", 8).first_drop is None


def test_a_warm_up_ramps_any_schedule_per_epoch():
    lrs = lrs_of(LrSchedule("constant", 8, steps_per_epoch=2, warmup_epochs=2), base=1.0)
    assert lrs == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_an_epoch_is_the_full_batches_of_the_training_set():
    assert steps_per_epoch(12131, 128) == 94  # CIFAR-10-LT at ratio 100 after the meta and validation hold-out
    assert steps_per_epoch(50, 128) == 1      # a batch larger than the set is the whole set


def test_nesterov_reaches_the_optimizer(make_cfg):
    cfg = make_cfg("nesterov=true", "momentum=0.9", "weight_decay=0.0002")
    group = make_optimizer(torch.nn.Linear(2, 2), cfg).param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (True, 0.9, 0.0002)
    assert make_optimizer(torch.nn.Linear(2, 2), make_cfg()).param_groups[0]["nesterov"] is False


def test_a_run_of_epochs_trains_their_steps_and_drops_lr_and_defers_weights_on_the_milestones(make_cfg, tmp_path, monkeypatch):
    """train(): `epochs` becomes the row's steps, the lr follows the milestones, and the first
    milestone reaches the method as the step its deferred class weights switch on."""
    from l2rw.run import train as train_module

    seen = {}
    real_fit = train_module.fit

    def recording_fit(model, method, splits, optimizer, scheduler, fit_options, **options):
        seen["train_size"] = len(splits.train)
        seen["first_lr_drop"] = options["first_lr_drop"]
        lrs = []
        real_step = optimizer.step

        def step(*args, **kwargs):
            lrs.append(optimizer.param_groups[0]["lr"])
            return real_step(*args, **kwargs)

        monkeypatch.setattr(optimizer, "step", step)
        result = real_fit(model, method, splits, optimizer, scheduler, fit_options, **options)
        seen["lrs"], seen["unweighted_steps"] = lrs, method.unweighted_steps
        return result

    monkeypatch.setattr(train_module, "fit", recording_fit)
    cfg = make_cfg("+recipe=ldam_drw", "epochs=4", "batch_size=50", "schedule=multistep", "warmup_epochs=1",
                   "lr_milestones=[2,3]", "lr_factors=[0.1,0.01]", "lr=0.2")
    row = train_module.train(cfg, tmp_path / "run")
    per_epoch = seen["train_size"] // 50
    assert row["steps"] == 4 * per_epoch and row["epochs"] == 4
    assert seen["lrs"] == pytest.approx([0.2] * 2 * per_epoch + [0.02] * per_epoch + [0.002] * per_epoch)
    assert seen["first_lr_drop"] == seen["unweighted_steps"] == 2 * per_epoch
