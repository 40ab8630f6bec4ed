"""CMW-Net (l2rw.methods.cmwnet) against the released code (github.com/xjtushujun/CMW-Net at
2bfd5e8): the forward-mode meta gradient against the double-backprop reference in float64, the
class-aware weight net against the released per-example head lookup, the class groups, each
variant's normalisation, meta-update frequency and plain start, and the heads a step leaves alone."""
import copy
from functools import partial

import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.losses import cross_entropy
from l2rw.losses.logit_adjusted import LogitAdjusted
from l2rw.methods.cmwnet import SETTINGS, ClassAwareWeightNet, OnGroups, class_groups, over_detached_sum
from l2rw.methods.mwnet import mwnet_gradient_double_backprop, mwnet_gradient_fwd
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32
from l2rw.run.instantiation import build


@pytest.mark.parametrize("variant", list(SETTINGS))
@pytest.mark.parametrize("architecture, shape", [(LeNet, (1, 8, 8)), (partial(ResNet32, blocks_per_stage=1), (3, 8, 8))],
                         ids=["lenet", "resnet32"])
@pytest.mark.parametrize("loss", ["ce", "logit_adjusted"])
def test_fwd_meta_gradient_equals_double_backprop_in_float64(architecture, shape, loss, variant):
    torch.manual_seed(0)
    model = architecture(shape, num_classes=10).double().train()
    x, y = torch.randn(12, *shape, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=torch.double), torch.arange(10)
    weight_net = OnGroups(ClassAwareWeightNet(groups=3).double(), torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0, 1])[y])
    loss_fn = cross_entropy if loss == "ce" else LogitAdjusted(torch.arange(1, 11) * 10, tau=1.0)
    reference_model = copy.deepcopy(model)
    setting = SETTINGS[variant].variant
    ours, losses = mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, 0.5, setting, loss_fn)
    theirs, reference_losses = mwnet_gradient_double_backprop(reference_model, weight_net, x, y, meta_x, meta_y, 0.5, setting, loss_fn)
    assert max(g.abs().max().item() for g in theirs) > 1e-6  # a gradient that tells the two apart
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(losses, reference_losses)
    # parameters: the shared layer's weight and bias, then each head's; a head gets a gradient
    # exactly when its group is in the batch (group 2 is absent here)
    head_weights = [ours[2 + 2 * group] for group in range(3)]
    assert [bool(head_weights[group].abs().sum() > 0) for group in range(3)] == [group in weight_net.groups.tolist() for group in range(3)]


def test_the_weight_net_is_the_released_per_example_head_lookup():
    """resnet.py 294-332: shared Linear(1, 100) + ReLU, then layers[c[label]] = Linear(100, 1) + Sigmoid per example."""
    torch.manual_seed(0)
    net = ClassAwareWeightNet(groups=3, hidden=100)
    losses, groups = torch.rand(9), torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1])
    features = net.shared(losses[:, None])
    released = torch.cat([torch.sigmoid(net.heads[int(groups[i])](features[i].unsqueeze(0))) for i in range(9)]).squeeze(1)
    torch.testing.assert_close(net(losses, groups), released)


def test_the_class_groups_are_k_means_on_the_class_sizes_numbered_from_the_smallest():
    counts = torch.tensor([5000, 4900, 60, 5100, 900, 55, 1000, 950, 50, 4800])
    assert class_groups(counts, 3).tolist() == [2, 2, 0, 2, 1, 0, 1, 1, 0, 2]
    assert class_groups(torch.full((4,), 70), 3).tolist() == [0, 0, 0, 0]  # one size: one group


def test_the_imbalance_variants_sum_is_a_constant_to_autograd():
    """LT1.py 278: sum(l * v) / sum(v).detach(): d/dv_i is l_i / sum(v), with no term through the sum."""
    raw, losses = torch.tensor([0.2, 0.5, 0.3], requires_grad=True), torch.tensor([1.0, 2.0, 4.0])
    (over_detached_sum(raw) * losses).sum().backward()
    torch.testing.assert_close(raw.grad, losses / 1.0)
    assert over_detached_sum(torch.zeros(3)).eq(0).all()


def method_on_a_small_problem(make_cfg, *overrides: str):
    """(method after setup, a linear model, x, y): 12 examples of 3 classes of sizes 7, 3 and 2."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.tensor([0] * 7 + [1] * 3 + [2] * 2)
    meta = LabeledImages(torch.randn(6, 5), torch.arange(6) % 3)
    method = build(make_cfg("method=cmwnet", *overrides).method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0), steps=10)
    return method, nn.Linear(5, 3), x, y


@pytest.mark.parametrize("variant, normalised", [("imbalance", lambda raw: raw / raw.sum()), ("noise", lambda raw: raw / len(raw))])
def test_meta_updates_come_every_meta_every_batches_of_an_epoch_after_the_plain_start(make_cfg, variant, normalised):
    """Batches of 3 of the 12 images: 4 an epoch; meta_every=3 updates at batches 0 and 3 of each
    (cmwn.py's batch_idx % 10 == 0), once int(0.2 * 10) plain steps are over."""
    method, model, x, y = method_on_a_small_problem(make_cfg, f"method.variant={variant}", "method.defer=0.2",
                                                    "method.meta_every=3", "method.meta_lr=0.01")
    changed = []
    for step in range(8):
        batch = torch.arange(3 * (step % 4), 3 * (step % 4) + 3)
        before = copy.deepcopy(method.weight_net.state_dict())
        result = method.step_loss(model, x[batch], y[batch], batch, 0.1)
        changed.append(any(not torch.equal(before[k], v) for k, v in method.weight_net.state_dict().items()))
        if step < 2:  # plain steps: every example 1/n
            torch.testing.assert_close(result.weights, torch.full((3,), 1 / 3))
        else:
            with torch.no_grad():
                losses = model(x[batch]).log_softmax(1).gather(1, y[batch, None]).squeeze(1).neg()
                raw = method.weight_net(losses, method.group_of_class[y[batch]])
            torch.testing.assert_close(result.weights, normalised(raw))
    assert changed == [False, False, False, True, True, False, False, True]


def test_a_head_absent_from_the_batch_moves_only_once_adam_has_stepped_it(make_cfg):
    """Under the PyTorch 1.x the released scripts ran on, a head out of a batch's graph has no
    gradient before its first step (Adam leaves it) and a zero one after (Adam's momentum and
    weight decay move it)."""
    method, model, x, y = method_on_a_small_problem(make_cfg, "method.variant=noise", "method.defer=0",
                                                    "method.meta_every=1", "method.meta_lr=0.01")
    groups = method.group_of_class[y]
    absent = ({0, 1, 2} - set(groups[:7].tolist())).pop()  # the first 7 examples are all of class 0

    def head_moves(batch: torch.Tensor) -> bool:
        before = copy.deepcopy(method.weight_net.heads[absent].state_dict())
        method.step_loss(model, x[batch], y[batch], batch, 0.1)
        return any(not torch.equal(before[k], v) for k, v in method.weight_net.heads[absent].state_dict().items())

    assert not head_moves(torch.arange(7))   # never stepped: left alone
    assert head_moves(torch.arange(12))      # in the batch
    assert head_moves(torch.arange(7))       # out of it again, with Adam state: still moves


@pytest.mark.parametrize("noise, variant, optimizer, settings", [
    ("none", "imbalance", torch.optim.Adam, {"lr": 1e-4, "weight_decay": 1e-5, "amsgrad": True}),  # LT1.py 160
    ("uniform", "noise", torch.optim.Adam, {"lr": 1e-4, "weight_decay": 1e-4, "amsgrad": False}),  # cmwn.py 340
])
def test_each_setting_gets_its_released_variant_and_optimizer(make_cfg, noise, variant, optimizer, settings):
    method, *_ = method_on_a_small_problem(make_cfg, f"noise.kind={noise}")
    assert method.variant == variant and type(method.optimizer) is optimizer
    assert {key: method.optimizer.param_groups[0][key] for key in settings} == settings
    assert method.meta_every == {"imbalance": 1, "noise": 10}[variant]
