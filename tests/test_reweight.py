"""l2rw.reweight: the normalisation on its own, each implementation against the definition (a
closed form, the published double-backprop graph), and what a training step needs from them:
the real forward's losses with their graph, and BatchNorm statistics updated once."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import example_weights, reweight
from l2rw.losses import cross_entropy
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32

IMPLEMENTATIONS = sorted(reweight.IMPLEMENTATIONS)
# (model, image shape): small images keep ResNet-32's 31 BatchNorm layers quick on CPU
MODELS = [(LeNet, (1, 8, 8)), (ResNet32, (3, 8, 8))]


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.2)


def conv_net_with_batchnorm() -> nn.Module:
    """Not one of l2rw.models, and without their penultimate/head interface: BatchNorm in 2-D and
    in 1-D, ending in the nn.Linear that impl=last_layer takes as the head."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 16), nn.BatchNorm1d(16),
        nn.Tanh(), nn.Linear(16, 5),
    ).double()


def batches(n: int = 12):
    torch.manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, dtype=torch.double), torch.randint(0, 5, (n,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10) % 5
    return x, y, meta_x, meta_y


# --- normalize -------------------------------------------------------------------------------

def test_normalize_keeps_the_positive_entries_in_proportion_and_zeroes_the_others():
    raw = torch.tensor([2.0, -1.0, 0.0, 6.0, -5.0], dtype=torch.double)
    # the positive entries 2 and 6 share 1 as 2 : 6; the negative and zero ones get nothing
    expected = torch.tensor([2 / 8, 0.0, 0.0, 6 / 8, 0.0], dtype=torch.double)
    torch.testing.assert_close(reweight.normalize(raw), expected, atol=1e-15, rtol=0)


def test_normalize_gives_exact_zeros_when_no_entry_is_positive():
    for raw in (torch.tensor([-1.0, 0.0, -3.0]), torch.zeros(4), torch.tensor([-2.0])):
        normalized = reweight.normalize(raw)
        assert torch.equal(normalized, torch.zeros_like(raw)), (raw, normalized)


def test_normalize_removes_any_positive_scale_and_keeps_the_dtype():
    raw = torch.tensor([0.5, -0.25, 1.5], dtype=torch.float32)
    for scale in (1e-6, 0.1, 3.0):
        torch.testing.assert_close(reweight.normalize(scale * raw), torch.tensor([0.25, 0.0, 0.75]), atol=1e-7, rtol=0)
    assert reweight.normalize(raw.double()).dtype == torch.double


# --- the weights against the definition ---------------------------------------------------------

def softmax_regression_weights(model: nn.Linear, x, y, meta_x, meta_y) -> torch.Tensor:
    """Closed form: grad of CE w.r.t. (W, b) is (p - onehot) [x, 1]^T, so
    g_meta . g_i = mean_j (p_j - e_j).(p_i - e_i) * (x_j . x_i + 1), kept where positive, summing to 1."""
    def residual(inputs, labels):
        return F.softmax(model(inputs), dim=1) - F.one_hot(labels, model.out_features).to(inputs.dtype)

    r_train, r_meta = residual(x, y), residual(meta_x, meta_y)
    dots = ((r_meta @ r_train.T) * (meta_x @ x.T + 1)).mean(0)
    positive = torch.where(dots > 0, dots, torch.zeros_like(dots))
    return positive / positive.sum()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_weights_match_the_closed_form_on_softmax_regression(impl):
    """A single linear layer: its head holds every parameter, so last_layer is exact too."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 3).double()
    x, y = torch.randn(32, 5, dtype=torch.double), torch.randint(0, 3, (32,))
    meta_x, meta_y = torch.randn(9, 5, dtype=torch.double), torch.arange(9) % 3
    expected = softmax_regression_weights(linear, x, y, meta_x, meta_y)
    assert (expected == 0).any() and (expected > 0).sum() >= 2  # a batch where the relu matters
    weights = reweight.IMPLEMENTATIONS[impl](nn.Sequential(linear), x, y, meta_x, meta_y, lr=0.1).weights
    torch.testing.assert_close(weights, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_weight_is_zero_when_no_example_helps(impl):
    torch.manual_seed(0)
    model = LeNet((1, 8, 8), num_classes=2).double()
    meta_x, meta_y = torch.randn(1, 1, 8, 8, dtype=torch.double), torch.tensor([0])
    # copies of the meta example with the other label: in a 2-class softmax their gradients
    # (whole, or the head's alone) are anti-parallel to the meta gradient
    x, y = meta_x.repeat(4, 1, 1, 1), 1 - meta_y.repeat(4)
    weights = reweight.IMPLEMENTATIONS[impl](model, x, y, meta_x, meta_y, lr=0.1).weights
    assert torch.equal(weights, torch.zeros(4, dtype=torch.double))


@pytest.mark.parametrize(
    "architecture, shape, compile_fwd",
    [(*model, False) for model in MODELS] + [pytest.param(ResNet32, (3, 8, 8), True, marks=pytest.mark.slow)],
    ids=lambda m: getattr(m, "__name__", {True: "compiled", False: "eager"}.get(m, "")),
)
def test_fwd_weights_losses_and_update_equal_double_backprop_in_float64(architecture, shape, compile_fwd):
    torch.manual_seed(0)
    model = architecture(shape, num_classes=10).double().train()
    x, y = torch.randn(12, *shape, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=torch.double), torch.arange(10)
    reference_model = copy.deepcopy(model)
    torch.compiler.reset()  # graphs another test compiled must not stand in for this one's
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    fwd = reweight.weights_fwd(torch.compile(model) if compile_fwd else model, x, y, meta_x, meta_y, 0.1)
    # the meta loss and the dual forward each became a compiled graph, or nothing was compiled
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before == (2 if compile_fwd else 0)
    reference = reweight.weights_double_backprop(reference_model, x, y, meta_x, meta_y, 0.1)
    assert (reference.weights > 0).sum() >= 2 and (reference.weights == 0).any()  # a batch that tells weights apart
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(fwd.losses, reference.losses, atol=1e-6, rtol=0)
    # the fwd losses carry the graph of a plain forward: the update's gradients are the same
    (fwd.weights * fwd.losses).sum().backward()
    (reference.weights * reference.losses).sum().backward()
    for (name, ours), theirs in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-9, rtol=0, msg=name)


def test_fwd_on_a_channels_last_model_equals_the_reference_on_its_nchw_copies():
    """hardware.channels_last (the CPU default): fwd runs NHWC, the reference its NCHW copies."""
    torch.manual_seed(0)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1).double().to(memory_format=torch.channels_last)
    x, y = torch.randn(12, 3, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 3, 8, 8, dtype=torch.double), torch.arange(10)
    reference = reweight.weights_double_backprop(copy.deepcopy(model), x, y, meta_x, meta_y)
    fwd = reweight.weights_fwd(model, x, y, meta_x, meta_y)
    assert (reference.weights > 0).sum() >= 2
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(fwd.losses, reference.losses, atol=1e-6, rtol=0)
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_example_weights_equal_the_reference_with_batchnorm_and_a_custom_loss():
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    reference_model, plain = copy.deepcopy(model), copy.deepcopy(model)
    weights, losses = example_weights(model, x, y, meta_x, meta_y, loss_fn=smoothed_cross_entropy)
    reference = example_weights(
        reference_model, x, y, meta_x, meta_y, loss_fn=smoothed_cross_entropy, impl="double_backprop"
    )
    assert (reference.weights > 0).sum() >= 2
    torch.testing.assert_close(weights, reference.weights, atol=1e-9, rtol=0)
    # the losses are the step's real forward: a plain forward's, with its graph
    torch.testing.assert_close(losses, smoothed_cross_entropy(plain(x), y), atol=1e-12, rtol=0)
    (weights * losses).sum().backward()
    (reference.weights * reference.losses).sum().backward()
    for (name, ours), theirs in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-9, rtol=0, msg=name)
    # loss_fn is what the weights are computed from: plain cross-entropy gives others
    plain_ce = example_weights(copy.deepcopy(plain), x, y, meta_x, meta_y).weights
    assert not torch.allclose(plain_ce, weights, atol=1e-4)


def test_a_training_loss_other_than_the_meta_loss_gives_the_same_weights_both_ways():
    """loss=logit_adjusted inside L2RW: the look-ahead step on the adjusted loss, the meta loss
    plain cross-entropy; fwd and the reference agree, and differ from the all-cross-entropy weights."""
    from l2rw.losses.logit_adjusted import LogitAdjusted

    torch.manual_seed(0)
    model = LeNet((1, 8, 8), num_classes=10).double().train()
    x, y = torch.randn(12, 1, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10)
    adjusted = LogitAdjusted(torch.arange(1, 11) ** 2, tau=1.0)
    kwargs = {"loss_fn": adjusted, "meta_loss_fn": cross_entropy}
    fwd = reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y, **kwargs)
    reference = reweight.weights_double_backprop(copy.deepcopy(model), x, y, meta_x, meta_y, **kwargs)
    torch.testing.assert_close(fwd.weights, reference.weights, atol=1e-10, rtol=0)
    plain = reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y)
    assert not torch.allclose(fwd.weights, plain.weights, atol=1e-3)
    # the public API's default meta loss is the training loss
    default = example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, loss_fn=adjusted)
    both_adjusted = reweight.weights_fwd(copy.deepcopy(model), x, y, meta_x, meta_y, loss_fn=adjusted, meta_loss_fn=adjusted)
    torch.testing.assert_close(default.weights, both_adjusted.weights, atol=1e-12, rtol=0)


def test_weights_do_not_depend_on_the_trainers_learning_rate():
    """The method calls IMPLEMENTATIONS[impl] with the optimizer's lr: the same weights."""
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    for impl, weigh in reweight.IMPLEMENTATIONS.items():
        ours = example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, impl=impl).weights
        trainers = weigh(copy.deepcopy(model), x, y, meta_x, meta_y, 0.03).weights
        assert (ours > 0).sum() >= 2, impl
        torch.testing.assert_close(ours, trainers, atol=1e-12, rtol=0, msg=impl)


# --- BatchNorm -------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("architecture", ["conv_net", "resnet32"])
def test_batchnorm_running_stats_are_updated_once_by_the_training_forward(impl, architecture):
    """Meta and look-ahead forwards use batch statistics without touching the running ones;
    only the step's real forward (whose losses are returned) updates them, as a plain step does."""
    if architecture == "conv_net":
        x, y, meta_x, meta_y = batches()
        model = conv_net_with_batchnorm()
    else:
        torch.manual_seed(0)
        model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1).double()
        x, y = torch.randn(12, 3, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
        meta_x, meta_y = torch.randn(10, 3, 8, 8, dtype=torch.double), torch.arange(10)
    plain = copy.deepcopy(model)
    example_weights(model, x, y, meta_x, meta_y, impl=impl)
    plain(x)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.num_batches_tracked.item() == 1 for m in norms)
    for (name, ours), theirs in zip(model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0, msg=name)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_the_weights_never_read_the_running_statistics(impl):
    """Meta and look-ahead forwards use batch statistics, as the training forward does."""
    torch.manual_seed(0)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1).double()
    x, y = torch.randn(12, 3, 8, 8, dtype=torch.double), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 3, 8, 8, dtype=torch.double), torch.arange(10)
    weights = example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, impl=impl).weights
    for name, buffer in model.named_buffers():
        if "running" in name:
            buffer.uniform_(5, 10)  # statistics that would wreck any forward pass that used them
    assert (weights > 0).sum() >= 2
    torch.testing.assert_close(example_weights(model, x, y, meta_x, meta_y, impl=impl).weights, weights, atol=1e-12, rtol=0)
