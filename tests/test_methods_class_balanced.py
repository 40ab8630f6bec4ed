"""method=class_balanced: the two weight formulas on a small count vector, and per-batch weights."""
import pytest
import torch

from l2rw.data import LabeledImages
from l2rw.methods.class_balanced import class_weights
from l2rw.run.instantiation import build

COUNTS = torch.tensor([100, 10, 1])
BATCH_LABELS = torch.tensor([0, 0, 1, 2])


def batch_weights(method, taken: int = 1, **run) -> list[torch.Tensor]:
    """The method's weights for BATCH_LABELS at each of `taken` steps, on a training set of COUNTS
    (`run`: what the trainer hands `setup`, e.g. the run's `steps`)."""
    labels = torch.cat([torch.full((int(n),), c) for c, n in enumerate(COUNTS)])
    method.setup(LabeledImages(torch.zeros(len(labels), 1), labels), None, 3, torch.Generator().manual_seed(0), **run)
    model, x = torch.nn.Linear(1, 3), torch.zeros(len(BATCH_LABELS), 1)
    return [method.step_loss(model, x, BATCH_LABELS, torch.arange(len(x)), 0.1).weights for _ in range(taken)]


def test_inverse_frequency():
    # 1/n = [0.01, 0.1, 1], sum 1.11, scaled to mean 1
    expected = torch.tensor([0.01, 0.1, 1.0], dtype=torch.double) * 3 / 1.11
    torch.testing.assert_close(class_weights(COUNTS, None), expected)


def test_effective_number():
    # (1 - 0.9) / (1 - 0.9^n): n=100 -> 0.1/(1-2.656e-5), n=10 -> 0.1/0.6513216, n=1 -> 1
    raw = torch.tensor([0.1 / (1 - 0.9**100), 0.1 / (1 - 0.9**10), 1.0], dtype=torch.double)
    torch.testing.assert_close(class_weights(COUNTS, 0.9), raw * 3 / raw.sum())
    assert torch.equal(class_weights(COUNTS, 0.0), torch.ones(3, dtype=torch.double))  # beta=0: no reweighting


def test_batch_weights_follow_the_class_weights(make_cfg):
    [weights] = batch_weights(build(make_cfg("method=class_balanced").method))
    raw = torch.tensor([0.01, 0.01, 0.1, 1.0])
    torch.testing.assert_close(weights, raw / raw.sum())


def test_deferred_reweighting_switches_on_after_its_fraction_of_the_steps(make_cfg):
    weights = batch_weights(build(make_cfg("method=class_balanced", "method.defer=0.4").method), 10, steps=10)
    uniform, raw = torch.full((4,), 0.25), torch.tensor([0.01, 0.01, 0.1, 1.0])
    for step, w in enumerate(weights, start=1):  # steps 1-4 unweighted (0.4 x 10), then the class weights
        torch.testing.assert_close(w, uniform if step <= 4 else raw / raw.sum(), msg=f"step {step}")


@pytest.mark.parametrize("first_lr_drop, switch", [(6, 6), (None, 8)])  # no drop (cosine): Cao et al.'s 160 of 200 epochs
def test_deferred_reweighting_switches_on_with_the_first_lr_drop(make_cfg, first_lr_drop, switch):
    weights = batch_weights(build(make_cfg("+recipe=ldam_drw").method), 10, steps=10, first_lr_drop=first_lr_drop)
    # Cao et al. (cifar_train.py): from the first lr drop on, effective-number weights with beta 0.9999
    beta = 0.9999
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in (100, 100, 10, 1)])
    for step, step_weights in enumerate(weights, start=1):  # step `first_lr_drop + 1` is the first at the dropped lr
        expected = torch.full((4,), 0.25) if step <= switch else raw / raw.sum()
        torch.testing.assert_close(step_weights, expected, msg=f"step {step}")


def test_cuis_normalisation_divides_by_the_batch_size(make_cfg):
    # Cui et al. (class-balanced-loss, cifar_main.py): sum of w_c * loss over the batch / B, w at mean 1
    [weights] = batch_weights(build(make_cfg("+recipe=cb_focal").method))
    beta = 0.9999
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in (100, 10, 1)])
    per_class = raw * 3 / raw.sum()
    torch.testing.assert_close(weights, per_class[BATCH_LABELS] / 4)
