"""Meta-Weight-Net: its forward-mode meta gradient against the double-backprop reference in
float64 (BatchNorm in training mode), and the method inside the trainer."""
import copy

import pytest
import torch

from l2rw.losses.logit_adjusted import LogitAdjusted
from l2rw.methods.mwnet import WeightNet, mwnet_gradient_double_backprop, mwnet_gradient_fwd
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32
from l2rw.reweight import cross_entropy


@pytest.mark.parametrize("architecture, shape", [(LeNet, (1, 8, 8)), (ResNet32, (3, 8, 8))], ids=["lenet", "resnet32"])
@pytest.mark.parametrize("loss", ["ce", "logit_adjusted"])
def test_fwd_meta_gradient_equals_double_backprop_in_float64(architecture, shape, loss):
    torch.manual_seed(0)
    model = architecture(shape, num_classes=10).double().train()
    weight_net = WeightNet().double()
    x, y = torch.randn(12, *shape, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=torch.double), torch.arange(10)
    loss_fn = cross_entropy if loss == "ce" else LogitAdjusted(torch.arange(1, 11) * 10, tau=1.0)
    reference_model = copy.deepcopy(model)
    ours, losses = mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, 0.5, loss_fn)
    theirs, reference_losses = mwnet_gradient_double_backprop(reference_model, weight_net, x, y, meta_x, meta_y, 0.5, loss_fn)
    assert max(g.abs().max().item() for g in theirs) > 1e-6  # a gradient that tells the two apart
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(losses, reference_losses, atol=1e-12, rtol=0)
    # the real forward updated BatchNorm's running statistics once in each
    for (name, mine), reference in zip(model.state_dict().items(), reference_model.state_dict().values()):
        torch.testing.assert_close(mine, reference, atol=1e-12, rtol=0, msg=name)


def test_the_meta_gradient_depends_on_the_look_ahead_point():
    """Unlike L2RW's (taken at eps = 0), MW-Net's meta gradient is taken after a real look-ahead
    step: at lr 0 it is zero, and it changes non-linearly with lr."""
    torch.manual_seed(1)
    model, weight_net = LeNet((1, 8, 8), 10).double(), WeightNet().double()
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.double), torch.randint(0, 10, (8,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10)
    at = {lr: mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, lr)[0][0] for lr in (0.0, 1.0, 2.0)}
    assert at[0.0].abs().max() == 0
    assert not torch.allclose(at[2.0], 2 * at[1.0], rtol=1e-3)


@pytest.mark.slow
def test_mwnet_trains_end_to_end_an_update_every_step(make_cfg, optimizer_steps):
    from l2rw.train import train

    cfg = make_cfg("method=mwnet", "steps=30")
    row = train(cfg, cfg.results_csv.rsplit("/", 1)[0] + "/run")
    assert row["status"] == "ok" and row["method"] == "mwnet" and row["skipped_steps"] == 0
    assert list(optimizer_steps.values()) == [30]  # the model's SGD; the weight net's is Adam
