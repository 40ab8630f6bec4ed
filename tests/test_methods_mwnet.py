"""Meta-Weight-Net (l2rw.methods.mwnet), each `variant` against the script it follows: the
forward-mode meta gradient against the double-backprop reference in float64 (BatchNorm in training
mode), which variant sees the loss's graph, the weights of a step, the weight net's optimizer and
meta loss, the default variant of a setting, and the method inside the trainer.

The released scripts quoted below: github.com/xjtushujun/Meta-weight-net_class-imbalance at
20c3276 (meta-weight-net-class-imbalance.py, "imbalance") and github.com/xjtushujun/meta-weight-net
at 3f1800f (MW-Net.py, "noise")."""
import copy
from functools import partial

import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.losses import cross_entropy
from l2rw.losses.logit_adjusted import LogitAdjusted
from l2rw.methods.mwnet import (
    VARIANTS,
    MetaWeightNet,
    WeightNet,
    batch_weights,
    mwnet_gradient_double_backprop,
    mwnet_gradient_fwd,
)
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32
from l2rw.run.instantiation import build
from tests.helpers.configs import config_options

LR = 0.1
# elr's loss reads its training examples' targets, so it cannot score a meta batch
TRAINING_LOSSES = [name for name in config_options("loss") if name not in ("ce", "elr")]


def largest_difference(gradient: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """The largest entry of gradient - other, relative to gradient's largest entry."""
    scale = max(g.abs().max().item() for g in gradient)
    return max((g - o).abs().max().item() for g, o in zip(gradient, other, strict=True)) / scale


@pytest.mark.parametrize("variant", list(VARIANTS))
# ResNet-32 at its 8-layer form: its BatchNorm layers and residual blocks are what the check needs, not
# its depth, and float64 double backprop through all 31 layers takes seconds a case
@pytest.mark.parametrize("architecture, shape", [(LeNet, (1, 8, 8)), (partial(ResNet32, blocks_per_stage=1), (3, 8, 8))],
                         ids=["lenet", "resnet32"])
@pytest.mark.parametrize("loss", ["ce", "logit_adjusted"])
def test_fwd_meta_gradient_equals_double_backprop_in_float64(architecture, shape, loss, variant):
    torch.manual_seed(0)
    model = architecture(shape, num_classes=10).double().train()
    weight_net = WeightNet().double()
    x, y = torch.randn(12, *shape, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=torch.double), torch.arange(10)
    loss_fn = cross_entropy if loss == "ce" else LogitAdjusted(torch.arange(1, 11) * 10, tau=1.0)
    reference_model = copy.deepcopy(model)
    ours, losses = mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, 0.5, VARIANTS[variant], loss_fn)
    theirs, reference_losses = mwnet_gradient_double_backprop(reference_model, weight_net, x, y, meta_x, meta_y, 0.5, VARIANTS[variant], loss_fn)
    assert max(g.abs().max().item() for g in theirs) > 1e-6  # a gradient that tells the two apart
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(losses, reference_losses, atol=1e-12, rtol=0)
    # the real forward updated BatchNorm's running statistics once in each
    for (name, mine), reference in zip(model.state_dict().items(), reference_model.state_dict().values()):
        torch.testing.assert_close(mine, reference, atol=1e-12, rtol=0, msg=name)


def small_lenet_problem(seed: int = 1):
    torch.manual_seed(seed)
    model, weight_net = LeNet((1, 8, 8), 10).double(), WeightNet().double()
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.double), torch.randint(0, 10, (8,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10)
    return model, weight_net, x, y, meta_x, meta_y


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_meta_gradient_depends_on_the_look_ahead_point(variant):
    """Unlike L2RW's (taken at eps = 0), MW-Net's meta gradient is taken after a real look-ahead
    step: at lr 0 it is zero, and it changes non-linearly with lr."""
    model, weight_net, x, y, meta_x, meta_y = small_lenet_problem()
    at = {lr: mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, lr, VARIANTS[variant])[0][0] for lr in (0.0, 1.0, 2.0)}
    assert at[0.0].abs().max() == 0
    assert not torch.allclose(at[2.0], 2 * at[1.0], rtol=1e-3)


# imbalance: `v_lambda = vnet(cost_v)` (meta-weight-net-class-imbalance.py:157-159); noise:
# `v_lambda = vnet(cost_v.data)` (MW-Net.py:206); hybrid: detached, as it always was here
SEES_THE_LOSS_GRAPH = {"imbalance": True, "noise": False, "hybrid": False}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_only_the_imbalance_variant_back_propagates_through_the_weight_nets_input(variant):
    losses = torch.rand(6, dtype=torch.double, requires_grad=True)
    weights = batch_weights(WeightNet().double(), losses, VARIANTS[variant])
    (through_input,) = torch.autograd.grad((weights * torch.rand(6, dtype=torch.double)).sum(), losses, allow_unused=True)
    assert (through_input is not None) == SEES_THE_LOSS_GRAPH[variant]


@pytest.mark.parametrize("gradient", [mwnet_gradient_fwd, mwnet_gradient_double_backprop], ids=["fwd", "double_backprop"])
def test_the_undetached_loss_changes_the_imbalance_variants_meta_gradient(gradient):
    """The look-ahead's d w_i / d theta terms are not negligible: the imbalance variant's meta
    gradient is not that of the same normalised weights on a detached loss (hybrid)."""
    model, weight_net, x, y, meta_x, meta_y = small_lenet_problem()
    undetached = gradient(model, weight_net, x, y, meta_x, meta_y, LR, VARIANTS["imbalance"])[0]
    detached = gradient(model, weight_net, x, y, meta_x, meta_y, LR, VARIANTS["hybrid"])[0]
    assert largest_difference(undetached, detached) > 1e-2


# --- the method, one step at a time --------------------------------------------------------------

def method_on_a_small_problem(make_cfg, variant: str, *overrides: str):
    """(method after setup, its training loss, a linear model, x, y): 12 imbalanced examples of 3
    classes (class-aware losses differ from cross-entropy there) and a meta set of 6."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.tensor([0] * 7 + [1] * 3 + [2] * 2)
    meta = LabeledImages(torch.randn(6, 5), torch.arange(6) % 3)
    cfg = make_cfg("method=mwnet", f"method.variant={variant}", *overrides)
    training_loss = build(cfg.loss, class_counts=torch.bincount(y, minlength=3))
    method = build(cfg.method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0), loss_fn=training_loss)
    return method, training_loss, nn.Linear(5, 3), x, y


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_weight_net_changes_every_step(make_cfg, variant):
    method, _, model, x, y = method_on_a_small_problem(make_cfg, variant)
    for _ in range(3):
        before = copy.deepcopy(method.weight_net.state_dict())
        method.step_loss(model, x, y, torch.arange(12), LR)
        assert any(not torch.equal(before[name], now) for name, now in method.weight_net.state_dict().items())


RELEASED_NORMALISATION = {
    "imbalance": lambda raw: raw / raw.sum(),  # meta-weight-net-class-imbalance.py:193-202
    "noise": lambda raw: raw / len(raw),  # MW-Net.py:234-237
    "hybrid": lambda raw: raw / raw.sum(),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_steps_weights_are_the_updated_nets_outputs_normalised_as_released(make_cfg, variant):
    method, training_loss, model, x, y = method_on_a_small_problem(make_cfg, variant)
    step = method.step_loss(model, x, y, torch.arange(12), LR)
    losses = training_loss(model(x), y)
    with torch.no_grad():
        raw = method.weight_net(losses)  # the net after this step's update, as both scripts weigh the batch
    torch.testing.assert_close(step.weights, RELEASED_NORMALISATION[variant](raw))
    torch.testing.assert_close(step.loss, (step.weights * losses).sum())


def test_weights_that_all_underflow_to_zero_stay_zeros(make_cfg):
    """meta-weight-net-class-imbalance.py:197-200 divides by the sum only when it is not 0; all
    zeros make the trainer skip the step rather than divide 0 by 0."""
    method, _, model, x, y = method_on_a_small_problem(make_cfg, "imbalance")
    with torch.no_grad():
        method.weight_net.layers[2].bias.fill_(-1e4)  # every sigmoid is exactly 0 in float32
    step = method.step_loss(model, x, y, torch.arange(12), LR)
    assert torch.equal(step.weights, torch.zeros(12))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("loss", TRAINING_LOSSES)
def test_the_meta_loss_stays_cross_entropy_whatever_the_training_loss(make_cfg, loss, variant):
    """The meta set stands in for the test set, which is scored by plain cross-entropy (both
    scripts' F.cross_entropy on the meta batch: MW-Net.py:221, meta-weight-net-class-imbalance.py:179)."""
    method, training_loss, model, x, y = method_on_a_small_problem(make_cfg, variant, f"loss={loss}")
    weight_net, meta = copy.deepcopy(method.weight_net), method.meta
    args = (model, weight_net, x, y, meta.images, meta.labels, LR, VARIANTS[variant], training_loss)
    expected, _ = mwnet_gradient_double_backprop(*args, meta_loss_fn=cross_entropy)
    with_training_meta_loss, _ = mwnet_gradient_double_backprop(*args, meta_loss_fn=training_loss)
    assert largest_difference(expected, with_training_meta_loss) > 1e-2  # the two meta losses are told apart here

    method.step_loss(model, x, y, torch.arange(12), LR)

    assert largest_difference(expected, [p.grad for p in method.weight_net.parameters()]) < 1e-4


# Each variant's optimizer for the weight net, as the released code builds it
RELEASED_OPTIMIZERS = {
    # meta-weight-net-class-imbalance.py:112-114: torch.optim.SGD(vnet.params(), 1e-5, momentum=args.momentum,
    # nesterov=args.nesterov, weight_decay=args.weight_decay), with the argparse defaults of lines 38-40
    "imbalance": (torch.optim.SGD, {"lr": 1e-5, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "dampening": 0}),
    # MW-Net.py:274-275: torch.optim.Adam(vnet.params(), 1e-3, weight_decay=1e-4), torch's defaults otherwise
    "noise": (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}),
    # the noise script's optimizer
    "hybrid": (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_trains_the_weight_net_with_its_released_optimizer(make_cfg, variant):
    kind, settings = RELEASED_OPTIMIZERS[variant]
    method = method_on_a_small_problem(make_cfg, variant)[0]
    (group,) = method.optimizer.param_groups
    assert type(method.optimizer) is kind
    assert {key: group[key] for key in settings} == settings
    assert [id(p) for p in group["params"]] == [id(p) for p in method.weight_net.parameters()]

    overridden = method_on_a_small_problem(make_cfg, variant, "method.meta_lr=0.05")[0]
    assert overridden.optimizer.param_groups[0] | {"params": None} == group | {"params": None, "lr": 0.05}


@pytest.mark.parametrize("overrides, variant", [
    ([], "imbalance"),
    (["dataset=fashion_mnist"], "imbalance"),
    (["noise.kind=uniform", "noise.rate=0.2"], "noise"),
    (["noise.kind=flip", "noise.rate=0.2"], "noise"),
    (["noise.kind=background", "noise.rate=0.2"], "noise"),
    (["noise.kind=uniform", "noise.rate=0.2", "method.variant=hybrid"], "hybrid"),
], ids=["clean", "fashion_mnist", "uniform_noise", "flip_noise", "background_noise", "named_hybrid"])
def test_the_default_variant_is_the_script_released_for_the_setting(make_cfg, overrides, variant):
    cfg = make_cfg("method=mwnet", *overrides)
    assert cfg.method.variant == variant
    assert cfg.method.meta_lr is None  # the variant's own: no dataset's value, tuned for another variant, applies
    assert build(cfg.method).meta_lr == RELEASED_OPTIMIZERS[variant][1]["lr"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, variant", [
    ([], "imbalance"),
    (["noise.kind=uniform", "noise.rate=0.2"], "noise"),
    (["method.variant=hybrid"], "hybrid"),
], ids=["imbalance", "noise", "hybrid"])
def test_mwnet_trains_end_to_end_an_update_every_step(make_cfg, optimizer_steps, monkeypatch, overrides, variant):
    from l2rw.run.train import train

    built = []
    real_setup = MetaWeightNet.setup

    def recording_setup(self, *args, **kwargs):
        real_setup(self, *args, **kwargs)
        built.append((self, copy.deepcopy(self.weight_net.state_dict())))

    monkeypatch.setattr(MetaWeightNet, "setup", recording_setup)
    cfg = make_cfg("method=mwnet", "steps=5", "eval_every=5", *overrides)
    assert cfg.method.variant == variant
    row = train(cfg, cfg.results_csv.rsplit("/", 1)[0] + "/run")
    assert row["status"] == "ok" and row["method"] == "mwnet" and row["skipped_steps"] == 0
    method, initial = built[-1]  # the method trained (a copy set up before it tried what the method builds)
    assert method.variant == variant
    assert any(not torch.equal(initial[name], now) for name, now in method.weight_net.state_dict().items())
    optimizer_steps.pop(id(method.optimizer), None)  # the imbalance variant's weight net is trained by SGD too
    assert list(optimizer_steps.values()) == [5]  # the model's SGD
