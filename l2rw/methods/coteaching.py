"""Co-teaching (Han et al., NeurIPS 2018): two networks, each trained on the small-loss share of
the batch its peer picks, since under label noise the examples a network fits with a small loss
are mostly clean ones. As released (github.com/bhanML/Co-teaching):
- loss.py 8-29: each network keeps its int((1 - forget rate) * batch) smallest losses (the
  released cross-entropy; here the run's `loss`), and each trains on the other's picks, averaged
  over them (the released code divides that mean by their number once more: a factor on the
  loss that changes only while the forget rate rises, which its Adam nearly ignores and SGD
  would not; not copied);
- main.py 134-135: the forget rate rises by epoch as linspace(0, forget_rate^exponent,
  num_gradual), then stays at forget_rate, the first training epoch at index 1 (main.py 287);
  main.py 112-115: forget_rate defaults to the noise rate.
Named deviation: both networks train with the run's optimizer and lr schedule (the released
Adam, lr 0.001, with its own lr and beta1 decay from epoch 80, is not this harness's optimizer).
The run's model is the first network, and it alone is evaluated and reported; the second, built
like it with another initialisation, is this method's state.
"""
import numpy as np
import torch
from torch import nn

from l2rw.data import LabeledImages
from l2rw.errors import DivergedError, UserError
from l2rw.losses import ExampleStateLoss
from l2rw.methods.base import Method, StepLoss, own_random_stream, step_count
from l2rw.run.options import number, whole
from l2rw.training.network import NewNetwork


def forget_rate_at(epoch: int, forget_rate: float, num_gradual: int, exponent: float) -> float:
    """The released rate_schedule[epoch] (main.py 134-135), for every epoch >= 0."""
    if epoch >= num_gradual:
        return forget_rate
    return float(np.linspace(0, forget_rate**exponent, num_gradual)[epoch])


def small_loss_weights(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """1/keep on the `keep` smallest of `losses`, 0 elsewhere (ties: the first in the batch)."""
    weights = torch.zeros_like(losses)
    weights[torch.argsort(losses.detach(), stable=True)[:keep]] = 1.0 / keep
    return weights.detach()


class CoTeaching(Method):
    """Uniformly shuffled batches; two networks, each weighted 1/kept on the small-loss examples
    its peer picks, 0 on the rest (the module's docstring has the rule and what was released)."""

    learns_example_weights = True   # a kept-or-not choice per example, worth plotting like learned weights

    def __init__(
        self,
        forget_rate: number(ge=0, lt=1, note=" (Han et al.: the noise rate)",
                            doc="the share of each batch a network leaves out, the largest losses first, once the "
                                "schedule reaches it"),
        num_gradual: whole(1, note=" (Han et al. use 10 of 200 epochs)",
                           doc="the epochs over which the forget rate rises from 0 (an epoch: a pass over the training "
                               "set, as the batches count it)") = 10,
        exponent: number(gt=0, le=10, note=" (Han et al. use 1)",
                         doc="the rise ends at forget_rate^exponent before the rate jumps to forget_rate, as released") = 1.0,
    ):
        self.forget_rate = forget_rate
        self.num_gradual = num_gradual
        self.exponent = exponent

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator,
              new_network: NewNetwork | None = None, **run):
        super().setup(train, meta, num_classes, generator, **run)
        if isinstance(self.loss_fn, ExampleStateLoss):
            raise UserError("method=coteaching trains two networks, but this `loss` keeps one estimate per training "
                            "example for one network (as loss=elr does); choose another, e.g. loss=ce or loss=sce")
        if new_network is None:
            raise ValueError("co-teaching builds its second network with `new_network`: pass it to setup")
        with own_random_stream(generator):
            self.peer = new_network()
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps_taken": self.steps_taken, "peer": self.peer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        steps_taken = step_count(state)
        try:
            self.peer.load_state_dict(state["peer"], steps_taken)
        except ValueError as problem:
            raise ValueError(f"its second network does not fit: {problem}") from None
        self.steps_taken = steps_taken

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        # the released loop trains epochs 1, 2, ... (main.py 287; epoch 0 only evaluates), so its
        # first epoch already forgets rate_schedule[1]
        epoch = 1 + self.steps_taken // max(self.num_train // len(y), 1)
        keep = max(int((1 - forget_rate_at(epoch, self.forget_rate, self.num_gradual, self.exponent)) * len(y)), 1)
        losses, peer_losses = self.loss_fn(model(x), y), self.loss_fn(self.peer.model(x), y)
        weights, peer_weights = small_loss_weights(peer_losses, keep), small_loss_weights(losses, keep)
        peer_loss = (peer_weights * peer_losses).sum()
        if not torch.isfinite(peer_loss):  # its picks would be arbitrary from here on
            raise DivergedError(self.steps_taken + 1, float(peer_loss), lr)
        self.peer.update(peer_loss)
        self.steps_taken += 1
        return StepLoss((weights * losses).sum(), weights)
