"""method.impl=last_layer: the L2RW weights from the final linear layer's gradients alone."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import reweight
from l2rw.errors import UserError
from l2rw.losses import cross_entropy
from l2rw.models.lenet import LeNet
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.2)


def batches(shape=(1, 8, 8), dtype=torch.double):
    torch.manual_seed(0)
    x, y = torch.randn(12, *shape, dtype=dtype), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=dtype), torch.arange(10)
    return x, y, meta_x, meta_y


def test_equals_the_exact_weights_when_the_last_layer_holds_every_parameter():
    """Features without parameters (BatchNorm without affine, which has running statistics):
    the head's gradients are the whole gradients, so last_layer is exact."""
    x, y, meta_x, meta_y = batches()
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64, affine=False), nn.Linear(64, 10)).double()
    results = {impl: weigh(copy.deepcopy(model), x, y, meta_x, meta_y) for impl, weigh in reweight.IMPLEMENTATIONS.items()}
    ours = results.pop("last_layer")
    assert (ours.weights > 0).sum() >= 2 and (ours.weights == 0).any()
    for impl, exact in results.items():
        torch.testing.assert_close(ours.weights, exact.weights, atol=1e-12, rtol=0, msg=impl)
        torch.testing.assert_close(ours.losses, exact.losses, atol=1e-12, rtol=0, msg=impl)


def per_example_loop(model: nn.Module, x, y, meta_x, meta_y, loss_fn) -> torch.Tensor:
    """The definition, one example at a time: grad of l_i w.r.t. the head's parameters, dotted
    with the mean meta loss's gradient w.r.t. them, kept where positive, summing to 1."""
    head = list(model.head.parameters())
    meta = torch.autograd.grad(loss_fn(model(meta_x), meta_y).mean(), head)
    raw = []
    for i in range(len(y)):
        own = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum(), head)
        raw.append(sum((g * m).sum() for g, m in zip(own, meta)))
    raw = torch.stack(raw)
    positive = torch.where(raw > 0, raw, torch.zeros_like(raw))
    return positive / positive.sum()


@pytest.mark.parametrize("loss_fn", [cross_entropy, smoothed_cross_entropy], ids=["ce", "smoothed"])
def test_equals_a_loop_over_examples_on_lenet(loss_fn):
    x, y, meta_x, meta_y = batches()
    model = LeNet((1, 8, 8), num_classes=10).double()
    expected = per_example_loop(copy.deepcopy(model), x, y, meta_x, meta_y, loss_fn)
    weights, losses = reweight.weights_last_layer(model, x, y, meta_x, meta_y, loss_fn=loss_fn, meta_loss_fn=loss_fn)
    assert (expected > 0).sum() >= 2
    torch.testing.assert_close(weights, expected, atol=1e-12, rtol=0)
    # not the exact weights: LeNet's other layers have parameters too
    assert not torch.allclose(weights, reweight.weights_fwd(model, x, y, meta_x, meta_y, loss_fn=loss_fn).weights, atol=1e-3)
    (weights * losses).sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # the losses reach every layer


def test_a_model_without_a_last_layer_is_named():
    class Pooled(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x, y, meta_x, meta_y = batches()
    with pytest.raises(UserError, match="impl=last_layer needs the model's last layer: give Pooled a `head`"):
        reweight.weights_last_layer(Pooled(), x, y, meta_x, meta_y)


@pytest.mark.slow
def test_runs_end_to_end_from_the_command_line(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "method=l2rw", "method.impl=last_layer", *FAST, "steps=4", "eval_every=4",
        f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "method.impl" in results.read_text().splitlines()[0] and ",last_layer," in results.read_text()
