"""l2rw.reweight under hardware.amp=bf16 and hardware.compile=true: the weights of the float32,
eager computation, to within what bf16 rounding measurably costs. The weights of a batch of 12-16
average 0.06-0.08; bf16 moves them by about 0.01 against float32, and two bf16 computations of the
same weights differ by about 0.001 (the tolerances below are a few times what was measured)."""
import copy

import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.models.mlp import MLP
from l2rw.models.resnet32 import ResNet32

BF16_AGAINST_BF16 = 3e-3     # measured up to 9e-4 (fwd, last_layer, compiled)
BF16_AGAINST_FLOAT32 = 0.02  # measured up to 0.015 (fwd on ResNet-32, four seeds)


def resnet_batches(n: int):
    x, y = torch.randn(n, 3, 8, 8), torch.randint(0, 10, (n,))
    return x, y, torch.randn(10, 3, 8, 8), torch.arange(10)


def test_fwd_under_bf16_autocast_gives_the_reference_weights():
    torch.manual_seed(0)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1)  # BatchNorm in bf16, kept small
    x, y, meta_x, meta_y = resnet_batches(16)
    exact = reweight.weights_double_backprop(copy.deepcopy(model), x, y, meta_x, meta_y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = reweight.weights_double_backprop(copy.deepcopy(model), x, y, meta_x, meta_y)
        fwd = reweight.weights_fwd(model, x, y, meta_x, meta_y)
    assert fwd.losses.requires_grad and (reference.weights > 0).sum() >= 2
    assert fwd.weights.dtype == torch.float32
    torch.testing.assert_close(fwd.weights, reference.weights, atol=BF16_AGAINST_BF16, rtol=0)
    torch.testing.assert_close(fwd.weights, exact.weights, atol=BF16_AGAINST_FLOAT32, rtol=0)


def test_last_layer_under_bf16_autocast_gives_the_float32_weights():
    torch.manual_seed(0)
    x, y, meta_x, meta_y = resnet_batches(12)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1)
    exact = reweight.weights_last_layer(copy.deepcopy(model), x, y, meta_x, meta_y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = reweight.weights_last_layer(model, x, y, meta_x, meta_y)
    assert got.weights.dtype == torch.float32 and (exact.weights > 0).sum() >= 2
    # the dot products run in float32 on bf16 features: closer than a whole bf16 computation
    torch.testing.assert_close(got.weights, exact.weights, atol=BF16_AGAINST_BF16, rtol=0)


@pytest.mark.slow
def test_a_compiled_model_gives_the_eager_weights_and_its_losses_back_propagate():
    """torch.compile on CPU takes seconds even for a tiny MLP, so one model serves every impl."""
    torch.manual_seed(0)
    eager = MLP((1, 8, 8), num_classes=10, hidden=[16])
    compiled = torch.compile(eager)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8), torch.arange(10)
    for impl, weigh in reweight.IMPLEMENTATIONS.items():
        expected = weigh(eager, x, y, meta_x, meta_y, lr=0.1)
        eager.zero_grad(set_to_none=True)
        got = weigh(compiled, x, y, meta_x, meta_y, lr=0.1)
        assert (expected.weights > 0).sum() >= 2, impl
        torch.testing.assert_close(got.weights, expected.weights, atol=1e-6, rtol=0, msg=impl)
        (got.weights * got.losses).sum().backward()  # the compiled forward's graph back-propagates
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in eager.parameters()), impl


@pytest.mark.slow
def test_compiled_fwd_under_bf16_autocast_gives_the_eager_bf16_and_the_float32_weights():
    """hardware.amp=bf16 with hardware.compile=true: both passes compile (BatchNorm's tangents are
    cast to bf16, else tracing stops at the next convolution)."""
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(64, 10),
    )
    reference, full_precision = copy.deepcopy(eager), copy.deepcopy(eager)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8), torch.arange(10)
    exact = reweight.weights_fwd(full_precision, x, y, meta_x, meta_y, lr=0.1)
    torch.compiler.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reweight.weights_fwd(reference, x, y, meta_x, meta_y, lr=0.1)
        got = reweight.weights_fwd(torch.compile(eager), x, y, meta_x, meta_y, lr=0.1)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before == 2  # meta loss, dual forward
    assert (expected.weights > 0).sum() >= 2
    torch.testing.assert_close(got.weights, expected.weights, atol=BF16_AGAINST_BF16, rtol=0)
    torch.testing.assert_close(got.weights, exact.weights, atol=BF16_AGAINST_FLOAT32, rtol=0)
    (got.weights * got.losses).sum().backward()  # the compiled dual forward's graph back-propagates
    assert all(p.grad is not None for p in eager.parameters())
