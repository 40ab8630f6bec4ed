"""Co-teaching (l2rw.methods.coteaching) against the released code (github.com/bhanML/Co-teaching
at 7c7fbe2): the forget-rate schedule, each network trained on its peer's small-loss picks, the
epochs the schedule counts, and the losses it refuses."""
import numpy as np
import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.errors import DivergedError, UserError
from l2rw.losses import cross_entropy
from l2rw.methods.coteaching import forget_rate_at
from l2rw.run.instantiation import build
from l2rw.training.network import Network
from l2rw.training.optimization import make_scheduler


@pytest.mark.parametrize("forget_rate, num_gradual, exponent", [(0.4, 10, 1.0), (0.2, 5, 2.0), (0.5, 1, 1.0)])
def test_the_forget_rate_follows_the_released_schedule(forget_rate, num_gradual, exponent):
    """main.py 134-135."""
    rate_schedule = np.ones(30) * forget_rate
    rate_schedule[:num_gradual] = np.linspace(0, forget_rate**exponent, num_gradual)
    assert [forget_rate_at(epoch, forget_rate, num_gradual, exponent) for epoch in range(30)] == list(rate_schedule)


def linear_network() -> Network:
    model = nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Network(model, optimizer, make_scheduler(optimizer, "constant", 100))


def set_up(make_cfg, *overrides: str, train_size: int = 20, **run):
    method = build(make_cfg("method=coteaching", *overrides).method)
    train = LabeledImages(torch.randn(train_size, 5), torch.arange(train_size) % 3)
    method.setup(train, train, 3, torch.Generator().manual_seed(0), new_network=linear_network, **run)
    return method, train


def test_each_network_trains_on_the_small_loss_picks_of_the_other(make_cfg):
    """loss.py 8-29: num_remember = int((1 - forget_rate) * batch); net 1 on net 2's smallest, net 2 on net 1's."""
    method, train = set_up(make_cfg, "method.forget_rate=0.3", "method.num_gradual=1")
    torch.manual_seed(1)
    model, x, y = nn.Linear(5, 3), train.images[:10], train.labels[:10]
    peer_before = {k: v.clone() for k, v in method.peer.model.state_dict().items()}
    losses, peer_losses = cross_entropy(model(x), y), cross_entropy(method.peer.model(x), y)
    ours, theirs = torch.argsort(losses)[:7], torch.argsort(peer_losses)[:7]

    step = method.step_loss(model, x, y, torch.arange(10), 0.1)

    assert step.weights.nonzero().squeeze(1).tolist() == sorted(theirs.tolist())
    torch.testing.assert_close(step.weights[theirs], torch.full((7,), 1 / 7))
    torch.testing.assert_close(step.loss, cross_entropy(model(x[theirs]), y[theirs]).mean())
    # the peer took one SGD step on the mean loss of our picks
    peer = nn.Linear(5, 3)
    peer.load_state_dict(peer_before)
    cross_entropy(peer(x[ours]), y[ours]).mean().backward()
    for name, parameter in peer.named_parameters():
        torch.testing.assert_close(method.peer.model.state_dict()[name], parameter.detach() - 0.1 * parameter.grad)


def test_the_schedule_counts_epochs_of_the_training_set(make_cfg):
    """20 images in batches of 10: two steps an epoch; the schedule is 0, 0.2, 0.4 over num_gradual=3
    epochs, and the released loop's first training epoch is 1 (main.py 287)."""
    method, train = set_up(make_cfg, "method.forget_rate=0.4", "method.num_gradual=3")
    kept = []
    for _ in range(7):
        step = method.step_loss(nn.Linear(5, 3), train.images[:10], train.labels[:10], torch.arange(10), 0.1)
        kept.append(int(step.weights.gt(0).sum()))
    assert kept == [8, 8, 6, 6, 6, 6, 6]


def test_a_loss_with_one_target_per_example_is_refused(make_cfg):
    with pytest.raises(UserError, match="method=coteaching trains two networks.*choose another, e.g. loss=ce"):
        set_up(make_cfg, "loss=elr", loss_fn=build(make_cfg("loss=elr").loss, class_counts=torch.tensor([7, 7, 6])))


def test_the_second_network_is_part_of_the_state_and_a_misfit_is_named(make_cfg):
    method, train = set_up(make_cfg, "method.forget_rate=0.2")
    method.step_loss(nn.Linear(5, 3), train.images[:10], train.labels[:10], torch.arange(10), 0.1)
    state = method.state_dict()
    restored, _ = set_up(make_cfg, "method.forget_rate=0.2")
    restored.load_state_dict(state)
    assert all(torch.equal(v, restored.peer.model.state_dict()[k]) for k, v in method.peer.model.state_dict().items())
    state["peer"]["model"]["weight"] = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="its second network does not fit: model .weight is 4x5 float32"):
        restored.load_state_dict(state)


def test_a_diverged_second_network_ends_the_run_as_a_diverged_first_one_does(make_cfg):
    method, train = set_up(make_cfg, "method.forget_rate=0.2")
    with torch.no_grad():
        method.peer.model.weight.fill_(float("nan"))
    with pytest.raises(DivergedError, match="loss is nan at step 1"):
        method.step_loss(nn.Linear(5, 3), train.images[:10], train.labels[:10], torch.arange(10), 0.1)
