"""Post-hoc logit adjustment: the prior a run trained on, measured from its weights, and the
evaluation's shifted argmax."""
import math

import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages, build_splits
from l2rw.train import train
from l2rw.trained_prior import SMALLEST_SHARE, TrainedPrior
from l2rw.training_loop import PixelStandardizer, evaluate


def test_uniform_weights_give_the_label_frequencies_and_class_weights_a_uniform_prior():
    labels = torch.tensor([0, 0, 0, 1])
    sgd, balanced = TrainedPrior(3, torch.device("cpu")), TrainedPrior(3, torch.device("cpu"))
    for _ in range(50):
        sgd.add(labels, torch.full((4,), 0.25), lr=0.1)
        balanced.add(labels, torch.tensor([1 / 6, 1 / 6, 1 / 6, 0.5]), lr=0.1)
    torch.testing.assert_close(sgd.shares(), torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(balanced.shares(), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    # tau * -log(share); a class never weighted is raised to SMALLEST_SHARE, so it stays finite
    expected = torch.tensor([-math.log(0.75), -math.log(0.25), -math.log(SMALLEST_SHARE)]) * 2
    torch.testing.assert_close(sgd.adjustment(2.0), expected)
    assert sgd.adjustment(0.0) is None and TrainedPrior(3, torch.device("cpu")).adjustment(1.0) is None


def test_each_step_counts_by_its_learning_rate():
    """Weights on class 0 at lr 0.3, then as many steps on class 1 at lr 0.1: the model moved three
    times as far towards class 0."""
    prior = TrainedPrior(2, torch.device("cpu"))
    for _ in range(10):
        prior.add(torch.tensor([0]), torch.tensor([1.0]), lr=0.3)
    for _ in range(10):
        prior.add(torch.tensor([1]), torch.tensor([1.0]), lr=0.1)
    torch.testing.assert_close(prior.shares(), torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_evaluation_takes_the_argmax_of_the_shifted_logits():
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1) * 30
    data = LabeledImages(images, torch.tensor([0, 1, 0, 1, 0, 1, 0, 1]))
    standardize = PixelStandardizer(images)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[1].bias.zero_()
    logits = model(standardize(images))
    shift = torch.tensor([0.0, 1.5])
    expected = (logits + shift).argmax(1)
    evaluation = evaluate(model, data, standardize, 2, shift)
    assert evaluation.confusion.diag().sum().item() == (expected == data.labels).sum().item()
    assert not torch.equal(expected, logits.argmax(1))  # the shift changed some predictions


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgd", "class_balanced"])
def test_a_runs_trained_prior_is_its_weights_class_shares(make_cfg, tmp_path, method):
    cfg = make_cfg(f"method={method}", "imbalance=0.8", "steps=60", "posthoc_tau=1")
    row = train(cfg, tmp_path / "run")
    shares = torch.tensor([float(v) for v in row["trained_prior"].split()])
    counts = torch.bincount(build_splits(cfg).train.labels, minlength=10).double()
    expected = counts / counts.sum() if method == "sgd" else torch.full((10,), 0.1, dtype=torch.float64)
    assert (shares - expected).abs().max() < 0.06, (shares, expected)
    assert row["posthoc_tau"] == 1
