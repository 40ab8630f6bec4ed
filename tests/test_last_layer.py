"""method.impl=last_layer: the L2RW weights from the final linear layer's gradients alone."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import reweight
from l2rw.errors import UserError
from l2rw.models import build_model
from l2rw.models.lenet import LeNet
from l2rw.models.resnet32 import ResNet32
from tests.conftest import FAST, config_options, run_cli


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.2)


def batches(shape=(1, 8, 8), dtype=torch.double):
    torch.manual_seed(0)
    x, y = torch.randn(12, *shape, dtype=dtype), torch.randint(0, 10, (12,))
    meta_x, meta_y = torch.randn(10, *shape, dtype=dtype), torch.arange(10)
    return x, y, meta_x, meta_y


@pytest.mark.parametrize("name", config_options("model"))
def test_every_model_is_its_head_applied_to_its_penultimate_features(make_cfg, name):
    torch.manual_seed(0)
    model = build_model(make_cfg(f"model={name}").model, (1, 8, 8), num_classes=10).eval()
    x = torch.randn(4, 1, 8, 8)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10
    torch.testing.assert_close(model(x), model.head(model.penultimate(x)), atol=0, rtol=0)


def test_lenet_and_mlp_keep_the_state_dict_keys_of_earlier_checkpoints(make_cfg):
    lenet = build_model(make_cfg("model=lenet").model, (1, 8, 8), num_classes=10)
    mlp = build_model(make_cfg("model=mlp").model, (1, 8, 8), num_classes=10)
    def layers(*names: str) -> list[str]:
        return [f"{name}.{tensor}" for name in names for tensor in ("weight", "bias")]

    assert list(lenet.state_dict()) == layers("features.0", "features.3", "classifier.0", "classifier.2", "classifier.4")
    assert list(mlp.state_dict()) == layers("net.1", "net.3", "net.5")


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
    with the mean meta loss's gradient w.r.t. them, then normalised."""
    head = list(model.head.parameters())
    meta = torch.autograd.grad(loss_fn(model(meta_x), meta_y).mean(), head)
    raw = []
    for i in range(len(y)):
        own = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum(), head)
        raw.append(sum((g * m).sum() for g, m in zip(own, meta)))
    return reweight.normalize(torch.stack(raw))


@pytest.mark.parametrize("loss_fn", [reweight.cross_entropy, smoothed_cross_entropy], ids=["ce", "smoothed"])
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


def test_meta_forward_leaves_resnet32_running_stats_to_the_training_forward():
    x, y, meta_x, meta_y = batches((3, 8, 8))
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1).double()
    plain = copy.deepcopy(model)
    reweight.weights_last_layer(model, x, y, meta_x, meta_y)
    plain(x)
    for (name, ours), theirs in zip(model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0, msg=name)


def test_bf16_autocast_gives_the_float32_weights_to_bf16_rounding():
    x, y, meta_x, meta_y = batches((3, 8, 8), torch.float32)
    model = ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1)
    exact = reweight.weights_last_layer(copy.deepcopy(model), x, y, meta_x, meta_y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = reweight.weights_last_layer(model, x, y, meta_x, meta_y)
    assert got.weights.dtype == torch.float32 and (exact.weights > 0).sum() >= 2
    torch.testing.assert_close(got.weights, exact.weights, atol=0.02, rtol=0)


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
