"""Each loss against values computed by hand on a tiny batch; the class prior from the training
labels; `ce` equal to the cross-entropy every method used before losses were a choice."""
import math

import pytest
import torch
import torch.nn.functional as F

from l2rw.data import build_splits
from l2rw.losses import ExampleStateLoss, step_of
from l2rw.run.instantiation import build
from tests.helpers.configs import config_options

# Two examples, three classes; probabilities of the labels: softmax([2, 0, 0])[0] and softmax([0, 1, 0])[2]
OUTPUTS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
TARGETS = torch.tensor([0, 2])
COUNTS = torch.tensor([80, 16, 4])
P = [math.exp(2) / (math.exp(2) + 2), 1 / (math.e + 2)]


def built(make_cfg, loss: str, *overrides: str):
    return build(make_cfg(f"loss={loss}", *overrides).loss, class_counts=COUNTS)


def test_ce_is_pytorchs_cross_entropy(make_cfg):
    expected = torch.tensor([-math.log(P[0]), -math.log(P[1])])
    torch.testing.assert_close(built(make_cfg, "ce")(OUTPUTS, TARGETS), expected)
    assert torch.equal(built(make_cfg, "ce")(OUTPUTS, TARGETS), F.cross_entropy(OUTPUTS, TARGETS, reduction="none"))


def test_focal(make_cfg):
    expected = torch.tensor([-(1 - p) ** 2 * math.log(p) for p in P])
    torch.testing.assert_close(built(make_cfg, "focal", "loss.gamma=2")(OUTPUTS, TARGETS), expected)
    torch.testing.assert_close(built(make_cfg, "focal", "loss.gamma=0")(OUTPUTS, TARGETS), built(make_cfg, "ce")(OUTPUTS, TARGETS))


def logit_adjusted_by_hand(tau: float) -> torch.Tensor:
    """Cross-entropy of OUTPUTS + tau * log(COUNTS' frequencies)."""
    prior = [0.8, 0.16, 0.04]
    adjusted = [[value + tau * math.log(p) for value, p in zip(row, prior)] for row in OUTPUTS.tolist()]
    return torch.tensor([math.log(sum(math.exp(v) for v in row)) - row[label] for row, label in zip(adjusted, TARGETS.tolist())])


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_shifts_by_tau_log_prior(make_cfg, tau):
    torch.testing.assert_close(built(make_cfg, "logit_adjusted", f"loss.tau={tau}")(OUTPUTS, TARGETS), logit_adjusted_by_hand(tau))


def test_logit_adjusteds_tau_follows_the_datasets_tuned_value(make_cfg):
    cfg = make_cfg("loss=logit_adjusted", "+dataset.tuned.sgd.logit_adjusted.tau=2")
    assert cfg.loss.tau == 2
    torch.testing.assert_close(build(cfg.loss, class_counts=COUNTS)(OUTPUTS, TARGETS), logit_adjusted_by_hand(2.0))


def test_ldam_subtracts_the_labels_margin_before_scaling(make_cfg):
    loss = built(make_cfg, "ldam", "loss.max_margin=0.5", "loss.scale=2")
    margins = [n ** -0.25 for n in (80, 16, 4)]
    margins = [m * 0.5 / max(margins) for m in margins]  # the rarest class (4 images) gets 0.5
    assert margins[2] == 0.5
    shifted = [[2 * (2 - margins[0]), 0, 0], [0, 2, 2 * (0 - margins[2])]]
    expected = [math.log(sum(math.exp(v) for v in row)) - row[label] for row, label in zip(shifted, (0, 2))]
    torch.testing.assert_close(loss(OUTPUTS, TARGETS), torch.tensor(expected))


def test_gce(make_cfg):
    expected = torch.tensor([(1 - p**0.5) / 0.5 for p in P])
    torch.testing.assert_close(built(make_cfg, "gce", "loss.q=0.5")(OUTPUTS, TARGETS), expected)


def test_the_prior_is_the_training_labels_after_imbalance_and_noise(make_cfg, monkeypatch):
    """logit_adjusted is built from the labels the model trains on: counted after the imbalance
    profile and the label noise, not from the pool or the clean labels."""
    from l2rw.run import train as train_module

    seen = {}
    real_build = train_module.build

    def spy(node, **runtime):
        if "class_counts" in runtime:
            seen["counts"] = runtime["class_counts"]
        return real_build(node, **runtime)

    monkeypatch.setattr(train_module, "build", spy)
    cfg = make_cfg("loss=logit_adjusted", "imbalance=0.8", "noise.kind=uniform", "noise.rate=0.3", "steps=1")
    train_module.train(cfg, cfg.results_csv.rsplit("/", 1)[0] + "/run")
    splits = build_splits(cfg)
    assert torch.equal(seen["counts"], torch.bincount(splits.train.labels, minlength=splits.num_classes))
    assert seen["counts"][0] > 0.5 * seen["counts"].sum()  # the imbalance shows


@pytest.mark.parametrize("loss", config_options("loss"))
def test_every_loss_builds_and_returns_one_loss_per_example(make_cfg, loss):
    loss_fn = built(make_cfg, loss)
    with step_of(loss_fn, torch.arange(2)):
        values = loss_fn(OUTPUTS, TARGETS)
    assert values.shape == (2,) and torch.isfinite(values).all()
    if not isinstance(loss_fn, ExampleStateLoss):  # ELR's regulariser, a log below 1, is negative
        assert (values >= 0).all()


def test_sce_as_released(make_cfg):
    """SCELoss-Reproduce loss.py 14-27, per example: alpha * CE + beta * -sum_k clamp(p_k, 1e-7, 1) *
    log(clamp(onehot_k, 1e-4, 1))."""
    alpha, beta, outputs = 0.3, 2.0, OUTPUTS * 10  # a probability below 1e-7: the clamp acts
    p = torch.softmax(outputs, 1).clamp(min=1e-7, max=1.0)
    label = F.one_hot(TARGETS, 3).float().clamp(min=1e-4, max=1.0)
    expected = alpha * F.cross_entropy(outputs, TARGETS, reduction="none") + beta * -(p * label.log()).sum(1)
    loss_fn = built(make_cfg, "sce", f"loss.alpha={alpha}", f"loss.beta={beta}")
    torch.testing.assert_close(loss_fn(outputs, TARGETS), expected, rtol=1e-6, atol=1e-9)
    # the reverse term is -A (1 - p_y): A = ln 1e-4 as released
    reverse_only = built(make_cfg, "sce", "loss.alpha=0", "loss.beta=1")(OUTPUTS, TARGETS)
    torch.testing.assert_close(reverse_only, -math.log(1e-4) * (1 - torch.tensor(P)))


def released_elr_step(target: torch.Tensor, index, output, label, beta: float, lam: float):
    """shengliu66/ELR, ELR/model/loss.py 21-29 (the batch mean kept per example): the new targets and the losses."""
    y_pred = torch.clamp(F.softmax(output, dim=1), 1e-4, 1.0 - 1e-4)
    y_pred_ = y_pred.data.detach()
    target = target.clone()
    target[index] = beta * target[index] + (1 - beta) * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))
    elr_reg = (1 - (target[index] * y_pred).sum(dim=1)).log()
    return target, F.cross_entropy(output, label, reduction="none") + lam * elr_reg


def test_elr_keeps_each_examples_target_across_steps_as_released(make_cfg):
    loss_fn = built(make_cfg, "elr", "loss.beta=0.6", "loss.lam=2")
    reference = torch.zeros(100, 3)
    torch.manual_seed(0)
    for index in ([3, 7], [7, 50], [3, 7]):  # example 7 three times, 3 twice: its estimate carries over
        index, outputs = torch.tensor(index), torch.randn(2, 3) * 6  # large logits: the clamp acts
        reference, expected = released_elr_step(reference, index, outputs, TARGETS, 0.6, 2.0)
        with step_of(loss_fn, index):
            loss_fn(outputs * 2, TARGETS)  # an earlier call of the step (a look-ahead) is superseded by the last
            torch.testing.assert_close(loss_fn(outputs, TARGETS), expected)
        torch.testing.assert_close(loss_fn.state_dict()["targets"], reference)
    assert reference[[3, 7, 50]].sum(1).gt(0).all() and reference[0].eq(0).all()  # only the examples seen moved


def test_elr_refuses_a_call_outside_a_step_and_a_state_of_another_training_set(make_cfg):
    loss_fn = built(make_cfg, "elr")
    with pytest.raises(RuntimeError, match="inside `batch"):
        loss_fn(OUTPUTS, TARGETS)
    with pytest.raises(ValueError, match="not 100 training examples' probabilities over 3 classes"):
        loss_fn.load_state_dict({"targets": torch.zeros(99, 3)})
    with pytest.raises(ValueError, match="probabilities"):
        loss_fn.load_state_dict({"targets": torch.full((100, 3), 2.0)})


def test_elr_keeps_the_first_row_of_an_example_drawn_twice_in_a_batch(make_cfg):
    """A sampler with replacement can draw an example twice; a plain indexed write keeps the last
    row on CPU and either on CUDA."""
    loss_fn = built(make_cfg, "elr")
    outputs = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    with step_of(loss_fn, torch.tensor([5, 9, 5])):
        loss_fn(outputs, torch.tensor([0, 1, 2]))
    expected, _ = released_elr_step(torch.zeros(100, 3), torch.tensor([5]), outputs[:1], torch.tensor([0]), 0.7, 3.0)
    torch.testing.assert_close(loss_fn.state_dict()["targets"][5], expected[5])
