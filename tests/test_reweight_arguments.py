"""`example_weights` refuses what it cannot weigh, naming the argument: NaN or infinite inputs,
empty batches, a one-example batch under BatchNorm, non-tensors, a model without parameters to
train, an unknown impl, a loss_fn that does not return one loss per example. Each of the three
implementations is behind the same check."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import example_weights
from l2rw.errors import UserError
from l2rw.models.resnet32 import ResNet32
from l2rw.reweight import IMPLEMENTATIONS


def batch(n=6, meta=4):
    torch.manual_seed(0)
    return torch.randn(n, 3), torch.randint(0, 2, (n,)), torch.randn(meta, 3), torch.randint(0, 2, (meta,))


def with_nan(tensor):
    tensor = tensor.clone()
    tensor[1, 0] = float("nan")
    return tensor


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case, message", [
    ("nan inputs", r"^inputs holds NaN or infinite values$"),
    ("inf meta", r"^meta_inputs holds NaN or infinite values$"),
    ("empty meta", r"^meta_inputs is empty"),
    ("numpy inputs", r"^inputs must be a torch.Tensor, got ndarray"),
    ("no model", r"^model must be a torch.nn.Module, got NoneType$"),
    ("frozen model", r"^model has no parameter with requires_grad=True"),
    ("mismatched targets", r"^inputs has 6 examples but its targets 5$"),
])
def test_a_bad_argument_is_a_value_error_naming_it(impl, case, message):
    x, y, meta_x, meta_y = batch()
    model = nn.Linear(3, 2)
    if case == "nan inputs":
        x = with_nan(x)
    elif case == "inf meta":
        meta_x = meta_x.clone()
        meta_x[0, 0] = float("inf")
    elif case == "empty meta":
        meta_x, meta_y = meta_x[:0], meta_y[:0]
    elif case == "numpy inputs":
        x = np.asarray(x)
    elif case == "no model":
        model = None
    elif case == "frozen model":
        model.requires_grad_(False)
    elif case == "mismatched targets":
        y = y[:5]
    with pytest.raises(ValueError, match=message):
        example_weights(model, x, y, meta_x, meta_y, impl=impl)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("which", ["inputs", "meta_inputs"])
def test_one_example_under_batchnorm_is_refused_by_every_implementation(impl, which):
    model = ResNet32((3, 8, 8), 2, blocks_per_stage=1).train()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    meta_x, meta_y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    if which == "inputs":
        x, y = x[:1], y[:1]
    else:
        meta_x, meta_y = meta_x[:1], meta_y[:1]
    with pytest.raises(ValueError, match=f"^{which} has one example: BatchNorm"):
        example_weights(model, x, y, meta_x, meta_y, impl=impl)


def test_weights_from_a_model_whose_loss_is_nan_are_refused_not_returned():
    x, y, meta_x, meta_y = batch()
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="the weights are not finite"):
        example_weights(model, x, y, meta_x, meta_y)


def test_an_unknown_impl_and_a_reduced_loss_are_named():
    x, y, meta_x, meta_y = batch()
    model = nn.Linear(3, 2)
    with pytest.raises(UserError, match="^impl='magic' is unknown; use one of fwd, double_backprop, last_layer$"):
        example_weights(model, x, y, meta_x, meta_y, impl="magic")
    with pytest.raises(UserError, match="^loss_fn returned shape \\(\\) for a batch of 6; it must return one loss per example"):
        example_weights(model, x, y, meta_x, meta_y, loss_fn=F.cross_entropy)  # reduction="mean"
