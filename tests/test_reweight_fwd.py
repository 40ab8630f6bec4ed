"""The forward-mode L2RW weights against the double-backprop reference, and one full trainer
step of each implementation (with BatchNorm) against the other."""
import copy

import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.config_schema import check_config
from l2rw.data import build_splits
from l2rw.instantiation import build
from l2rw.models import build_model
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32
from l2rw.train import make_scheduler
from l2rw.training_loop import fit

# (model, image shape): small images keep ResNet-32's 31 BatchNorm layers quick on CPU
MODELS = [(LeNet, (1, 8, 8)), (ResNet32, (3, 8, 8))]


def both_impls(
    model: nn.Module, x, y, meta_x, meta_y, lr=0.1, compile_fwd=False
) -> tuple[reweight.Reweighted, reweight.Reweighted, nn.Module, nn.Module]:
    """Each implementation on its own copy of `model` (both may update BatchNorm running stats);
    `compile_fwd`: fwd gets the model under torch.compile, as hardware.compile=true places it."""
    fwd_model, reference_model = model, copy.deepcopy(model)
    torch.compiler.reset()  # graphs another test compiled must not stand in for this one's
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    fwd = reweight.weights_fwd(torch.compile(fwd_model) if compile_fwd else fwd_model, x, y, meta_x, meta_y, lr)
    # the meta loss and the dual forward each became a compiled graph, or nothing was compiled
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before == (2 if compile_fwd else 0)
    reference = reweight.weights_double_backprop(reference_model, x, y, meta_x, meta_y, lr)
    return fwd, reference, fwd_model, reference_model


@pytest.mark.parametrize(
    "architecture, shape, compile_fwd",
    [(*model, False) for model in MODELS] + [pytest.param(ResNet32, (3, 8, 8), True, marks=pytest.mark.slow)],
    ids=lambda m: getattr(m, "__name__", {True: "compiled", False: "eager"}.get(m, "")),
)
def test_fwd_weights_and_losses_equal_double_backprop_in_float64(architecture, shape, compile_fwd):
    torch.manual_seed(0)
    model = architecture(shape, num_classes=10).double().train()
    x, y = torch.randn(12, *shape, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=torch.double), torch.arange(10)
    fwd, reference, fwd_model, reference_model = both_impls(model, x, y, meta_x, meta_y, compile_fwd=compile_fwd)
    assert (reference.weights > 0).sum() >= 2  # a batch that tells weights apart
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(fwd.losses, reference.losses, atol=1e-6, rtol=0)
    # both forwards that update BatchNorm running stats (the real one) ran once each
    for (name, ours), theirs in zip(fwd_model.state_dict().items(), reference_model.state_dict().values()):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0, msg=name)
    # the fwd losses carry the graph of a plain forward: the update's gradients are the same
    (fwd.weights * fwd.losses).sum().backward()
    (reference.weights * reference.losses).sum().backward()
    for (name, ours), theirs in zip(fwd_model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-9, rtol=0, msg=name)


def test_impls_agree_on_a_channels_last_model():
    """hardware.channels_last (the CPU default): fwd runs NHWC, the reference its NCHW copies."""
    torch.manual_seed(0)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1).double().to(memory_format=torch.channels_last)
    x, y = torch.randn(12, 3, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 3, 8, 8, dtype=torch.double), torch.arange(10)
    fwd, reference, fwd_model, _ = both_impls(model, x, y, meta_x, meta_y)
    assert (reference.weights > 0).sum() >= 2
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(fwd.losses, reference.losses, atol=1e-6, rtol=0)
    assert fwd_model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fwd_and_double_backprop_both_give_all_zero_weights_when_no_example_helps():
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), num_classes=2).double()
    meta_x, meta_y = torch.randn(1, 1, 8, 8, dtype=torch.double), torch.tensor([0])
    # copies of the meta example with the other label: in a 2-class softmax their gradients
    # are anti-parallel to the meta gradient
    x, y = meta_x.repeat(4, 1, 1, 1), 1 - meta_y.repeat(4)
    fwd, reference, _, _ = both_impls(model, x, y, meta_x, meta_y)
    zeros = torch.zeros(4, dtype=torch.double)
    assert torch.equal(reference.weights, zeros) and torch.equal(fwd.weights, zeros)


def test_impls_agree_under_bf16_autocast():
    torch.manual_seed(0)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1)  # BatchNorm in bf16, kept small
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    meta_x, meta_y = torch.randn(10, 3, 8, 8), torch.arange(10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fwd, reference, _, _ = both_impls(model, x, y, meta_x, meta_y)
    assert fwd.losses.requires_grad and (reference.weights > 0).sum() >= 2
    # bf16 keeps 8 bits of mantissa: the same weights, to a few hundredths
    torch.testing.assert_close(fwd.weights, reference.weights, atol=3e-2, rtol=0)


def one_trainer_step(make_cfg, tmp_path, impl: str) -> dict[str, torch.Tensor]:
    """Model state after one step of `fit` with method=l2rw method.impl=`impl`."""
    cfg = make_cfg("model=resnet32", "method=l2rw", f"method.impl={impl}", "batch_size=16")
    splits = build_splits(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    outcome = fit(
        model, build(cfg.method), splits, optimizer, make_scheduler(optimizer, cfg.schedule, 1),
        steps=1, batch_size=cfg.batch_size, eval_every=1, generator=torch.Generator().manual_seed(cfg.seed),
        metrics_csv=tmp_path / f"{impl}.csv", progress=False,
    )
    assert outcome.skipped_steps == 0
    after = model.state_dict()
    for name in ("stem.0.weight", "stem.1.running_mean", "stem.1.num_batches_tracked"):
        assert not torch.equal(after[name], initial[name]), f"{name} did not change: no step was taken"
    return after


def test_one_l2rw_trainer_step_gives_the_reference_parameters_and_running_stats(make_cfg, tmp_path):
    fwd, reference = one_trainer_step(make_cfg, tmp_path, "fwd"), one_trainer_step(make_cfg, tmp_path, "double_backprop")
    assert fwd.keys() == reference.keys()
    for name in fwd:
        torch.testing.assert_close(fwd[name], reference[name], atol=1e-6, rtol=0, msg=name)
    assert fwd["stem.1.num_batches_tracked"].item() == 1  # running stats updated by one forward only


def test_unknown_impl_names_the_field(make_cfg):
    from l2rw.errors import UserError

    with pytest.raises(UserError, match="method.impl"):
        check_config(make_cfg("method=l2rw", "method.impl=magic"))


def test_a_training_loss_other_than_the_meta_loss_gives_the_same_weights_both_ways():
    """loss=logit_adjusted inside L2RW: the look-ahead step on the adjusted loss, the meta loss
    plain cross-entropy; fwd and the reference agree, and differ from the all-cross-entropy weights."""
    from l2rw.losses.logit_adjusted import LogitAdjusted

    torch.manual_seed(0)
    model = LeNet((1, 8, 8), num_classes=10).double().train()
    x, y = torch.randn(12, 1, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10)
    adjusted = LogitAdjusted(torch.arange(1, 11) ** 2, tau=1.0)
    kwargs = {"loss_fn": adjusted, "meta_loss_fn": reweight.cross_entropy}
    fwd = reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y, **kwargs)
    reference = reweight.weights_double_backprop(copy.deepcopy(model), x, y, meta_x, meta_y, **kwargs)
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-10, rtol=0)
    plain = reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y)
    assert not torch.allclose(fwd.weights, plain.weights, atol=1e-3)
    # the public API's default meta loss is the training loss: today's behaviour
    default = reweight.example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, loss_fn=adjusted)
    torch.testing.assert_close(default.weights, reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y, loss_fn=adjusted,
                                                                       meta_loss_fn=adjusted).weights, atol=1e-12, rtol=0)
