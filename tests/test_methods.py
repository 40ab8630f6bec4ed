"""Methods and the L2RW weight math, checked against independent computations."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.instantiation import build


def test_weighted_sampler_draws_classes_near_uniformly(make_cfg):
    sampler = build(make_cfg("method=weighted_sampler").method)
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    train = LabeledImages(torch.zeros(1000, 1, 1, 1, dtype=torch.uint8), labels)
    sampler.setup(train, train, 3, torch.Generator().manual_seed(0))
    batches = sampler.batches(100)
    drawn = torch.cat([labels[next(batches)] for _ in range(200)])
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.02), share
    # a uniform sampler would give [0.9, 0.09, 0.01]


def test_sgd_batches_cover_each_example_once_per_epoch(make_cfg):
    method = build(make_cfg("method=sgd").method)
    train = LabeledImages(torch.zeros(10, 1, 1, 1, dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    method.setup(train, train, 1, torch.Generator().manual_seed(0))
    batches = method.batches(5)
    assert sorted(torch.cat([next(batches), next(batches)]).tolist()) == list(range(10))


def softmax_regression_weights(model: nn.Linear, x, y, meta_x, meta_y) -> torch.Tensor:
    """Closed form: grad of CE w.r.t. (W, b) is (p - onehot) [x, 1]^T, so
    g_meta . g_i = mean_j (p_j - e_j).(p_i - e_i) * (x_j . x_i + 1)."""
    def residual(inputs, labels):
        return F.softmax(model(inputs), dim=1) - F.one_hot(labels, model.out_features).to(inputs.dtype)

    r_train, r_meta = residual(x, y), residual(meta_x, meta_y)
    dots = ((r_meta @ r_train.T) * (meta_x @ x.T + 1)).mean(0)
    positive = dots.clamp(min=0)
    return positive / positive.sum()


def test_l2rw_weights_match_closed_form_on_softmax_regression():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x, y = torch.randn(32, 5, dtype=torch.double), torch.randint(0, 3, (32,))
    meta_x, meta_y = torch.randn(9, 5, dtype=torch.double), torch.arange(9) % 3
    weights = reweight.weights_double_backprop(model, x, y, meta_x, meta_y, lr=0.1).weights
    expected = softmax_regression_weights(model, x, y, meta_x, meta_y)
    assert (weights >= 0).all() and weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (weights == 0).any() and (weights > 0).any()
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=0)


def test_l2rw_weights_all_zero_when_no_example_helps():
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double()
    meta_x, meta_y = torch.randn(1, 4, dtype=torch.double), torch.tensor([0])
    # the meta example with its label flipped: in a 2-class softmax its gradient is anti-parallel
    weights = reweight.weights_double_backprop(model, meta_x.repeat(4, 1), 1 - meta_y.repeat(4), meta_x, meta_y, lr=0.1).weights
    assert torch.equal(weights, torch.zeros(4, dtype=torch.double))


@pytest.mark.parametrize("impl", sorted(reweight.IMPLEMENTATIONS))
def test_l2rw_updates_batchnorm_stats_once_like_a_plain_forward(impl):
    """Meta and look-ahead forwards use batch statistics without touching the running ones;
    only the step's real forward (whose losses are returned) updates them."""
    import copy

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    plain = copy.deepcopy(model)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    reweight.IMPLEMENTATIONS[impl](model, x, y, x[:4], y[:4], lr=0.1)
    plain(x)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[key], atol=1e-6, rtol=0, msg=key)
