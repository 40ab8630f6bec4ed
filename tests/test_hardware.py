"""hardware.amp and hardware.compile: runs complete, and L2RW's weights survive them."""
import copy

import pandas as pd
import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.errors import UserError
from l2rw.models.mlp import MLP
from l2rw.train import train


def test_bf16_autocast_run_records_impl_and_seconds_per_step(make_cfg, tmp_path):
    row = train(make_cfg("method=l2rw", "hardware.amp=bf16", "steps=4", "eval_every=4"), tmp_path / "run")
    assert row["status"] == "ok" and row["skipped_steps"] < 4
    written = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert written["method.impl"] == "fwd" and written.seconds_per_step > 0
    assert written["hardware.amp"] == "bf16" and str(written["hardware.channels_last"]) == "True"


def test_unknown_amp_names_the_field(make_cfg, tmp_path):
    with pytest.raises(UserError, match="hardware.amp"):
        train(make_cfg("hardware.amp=fp8"), tmp_path / "run")


@pytest.mark.slow
def test_compiled_model_trains_and_gives_the_eager_weights():
    """torch.compile on CPU takes seconds even for a tiny MLP, so one model serves every check."""
    torch.manual_seed(0)
    eager = MLP((1, 8, 8), num_classes=10, hidden=[16])
    compiled = torch.compile(eager)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8), torch.arange(10)
    for impl, weigh in reweight.IMPLEMENTATIONS.items():
        expected = weigh(eager, x, y, meta_x, meta_y, lr=0.1)
        got = weigh(compiled, x, y, meta_x, meta_y, lr=0.1)
        torch.testing.assert_close(got.weights, expected.weights, atol=1e-6, rtol=0, msg=impl)
        (got.weights * got.losses).sum().backward()  # the compiled forward's graph back-propagates
        assert all(p.grad is not None for p in eager.parameters()), impl


@pytest.mark.slow
def test_compiled_fwd_weights_under_bf16_autocast():
    """hardware.amp=bf16 with hardware.compile=true: both passes compile (BatchNorm's tangents are
    cast to bf16, else tracing stops at the next convolution) and the weights are the eager bf16
    ones and the float32 ones, to bf16 rounding."""
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
    torch.testing.assert_close(got.weights, expected.weights, atol=0.02, rtol=0)  # bf16 rounding
    torch.testing.assert_close(got.weights, exact.weights, atol=0.02, rtol=0)
    (got.weights * got.losses).sum().backward()  # the compiled dual forward's graph back-propagates
    assert all(p.grad is not None for p in eager.parameters())


@pytest.mark.parametrize("channels_last", [True, False])
def test_place_model_uses_the_configured_layout(make_cfg, channels_last):
    from l2rw.models.resnet32 import ResNet32
    from l2rw.hardware import place_model

    hardware = make_cfg(f"hardware.channels_last={channels_last}").hardware
    model = place_model(ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1), hardware, torch.device("cpu"))
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in conv_weights)
    logits = model(torch.randn(5, 3, 8, 8))  # NCHW inputs are accepted either way
    assert logits.shape == (5, 10)
