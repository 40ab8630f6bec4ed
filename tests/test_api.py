"""`from l2rw import example_weights`: the public entry point, with any model and loss."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import example_weights, reweight
from l2rw.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.2)


def conv_net_with_batchnorm() -> nn.Module:
    """Not one of l2rw.models, and without their penultimate/head interface."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 16), nn.BatchNorm1d(16),
        nn.Tanh(), nn.Linear(16, 5),
    ).double()


def batches(n: int = 12):
    torch.manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, dtype=torch.double), torch.randint(0, 5, (n,))
    meta_x, meta_y = torch.randn(10, 1, 8, 8, dtype=torch.double), torch.arange(10) % 5
    return x, y, meta_x, meta_y


def test_example_weights_equal_the_double_backprop_reference_with_batchnorm_and_a_custom_loss():
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    reference_model, plain = copy.deepcopy(model), copy.deepcopy(model)
    weights, losses = example_weights(model, x, y, meta_x, meta_y, loss_fn=smoothed_cross_entropy)
    reference = example_weights(
        reference_model, x, y, meta_x, meta_y, loss_fn=smoothed_cross_entropy, impl="double_backprop"
    )
    assert (reference.weights > 0).sum() >= 2 and weights.sum().item() == pytest.approx(1.0, abs=1e-12)
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


def test_weights_do_not_depend_on_the_trainers_learning_rate():
    """The method calls IMPLEMENTATIONS[impl] with the optimizer's lr: the same weights."""
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    for impl, weigh in reweight.IMPLEMENTATIONS.items():
        ours = example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, impl=impl).weights
        trainers = weigh(copy.deepcopy(model), x, y, meta_x, meta_y, 0.03).weights
        torch.testing.assert_close(ours, trainers, atol=1e-12, rtol=0, msg=impl)


@pytest.mark.parametrize("impl", sorted(reweight.IMPLEMENTATIONS))
def test_batchnorm_running_stats_are_updated_exactly_once(impl):
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    plain = copy.deepcopy(model)
    example_weights(model, x, y, meta_x, meta_y, loss_fn=smoothed_cross_entropy, impl=impl)
    plain(x)
    assert model[1].num_batches_tracked.item() == 1
    for (name, ours), theirs in zip(model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0, msg=name)


def test_unknown_impl_and_a_reduced_loss_are_named():
    x, y, meta_x, meta_y = batches()
    model = conv_net_with_batchnorm()
    with pytest.raises(UserError, match="impl='magic' is unknown; use one of fwd, double_backprop, last_layer"):
        example_weights(model, x, y, meta_x, meta_y, impl="magic")
    with pytest.raises(UserError, match="one loss per example"):
        example_weights(model, x, y, meta_x, meta_y, loss_fn=F.cross_entropy)  # reduction="mean"


def test_importing_the_library_does_not_import_hydra():
    code = "import sys; from l2rw import example_weights; assert 'hydra' not in sys.modules, 'hydra imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_own_training_loop_example_runs_and_reports_both_losses():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_training_loop.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "balanced accuracy" in done.stdout and "l2rw" in done.stdout and "uniform" in done.stdout
