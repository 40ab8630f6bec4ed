"""Meta-Weight-Net (Shu et al., NeurIPS 2019): a small MLP maps each example's loss to its weight.

Each step, with V the MLP (parameters phi) and w_i = V(l_i) / sum_j V(l_j):
1. look ahead: theta' = theta - lr * sum_i w_i grad l_i(theta);
2. update phi by the gradient of the meta loss at theta', through theta'(phi);
3. update the model on sum_i w_i l_i with the new phi's weights.
As in the released code: V is 1-100-1 with a ReLU and a sigmoid output, sees the losses
detached, is trained by Adam (lr `meta_lr`, weight decay 1e-4), and the look-ahead is plain SGD at
the model's current learning rate; the meta loss is cross-entropy on a clean meta batch.

Step 2 without the look-ahead's double backward: by the chain rule
    d L_meta(theta') / d phi = -lr * sum_i (g' . grad l_i(theta)) * d w_i / d phi,
with g' = grad L_meta(theta'), and the n dot products g' . grad l_i are one forward-mode pass
along g' (`l2rw.reweight.losses_along`, L2RW's weight computation); the sum is then a backward
through V alone. `mwnet_gradient_double_backprop` is the published graph, kept as the reference.
"""
import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.methods.base import MetaMethod, StepLoss
from l2rw.options import choice, number, whole
from l2rw.reweight import LossFunction, cross_entropy, forward_on_scratch_buffers, trainable_parameters

# The released code's weight decay for the MLP's Adam
WEIGHT_NET_DECAY = 1e-4


class WeightNet(nn.Module):
    """Loss -> weight in (0, 1): Linear(1, hidden), ReLU, Linear(hidden, 1), sigmoid."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.layers(losses.detach()[:, None]).squeeze(1)


def normalized_weights(weight_net: WeightNet, losses: torch.Tensor) -> torch.Tensor:
    """V(l_i) / sum_j V(l_j), differentiable w.r.t. V's parameters (a sigmoid never sums to 0)."""
    raw = weight_net(losses)
    return raw / raw.sum()


def mwnet_gradient_fwd(
    model: nn.Module, weight_net: WeightNet, x, y, meta_x, meta_y, lr: float,
    loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(d L_meta(theta') / d phi for each of V's parameters, the training losses of the step's
    real forward at theta, differentiable w.r.t. the model's parameters)."""
    network = reweight.eager(model)
    params = trainable_parameters(network)
    first_losses = loss_fn(forward_on_scratch_buffers(network, params, x), y)
    weights = normalized_weights(weight_net, first_losses)
    # theta', detached: the weights reach the meta loss through the dot products below
    grads = torch.autograd.grad((weights.detach() * first_losses).sum(), list(params.values()))
    lookahead = {name: (p - lr * g).detach().requires_grad_() for (name, p), g in zip(params.items(), grads)}
    meta_direction = dict(zip(lookahead, torch.autograd.grad(
        reweight.meta_loss(network, lookahead, meta_x, meta_y, meta_loss_fn), list(lookahead.values())
    )))
    losses, alignment = reweight.losses_along(network, x, y, meta_direction, loss_fn)
    gradient = torch.autograd.grad(-lr * (alignment * weights).sum(), list(weight_net.parameters()))
    return list(gradient), losses


def mwnet_gradient_double_backprop(
    model: nn.Module, weight_net: WeightNet, x, y, meta_x, meta_y, lr: float,
    loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The reference: a differentiable look-ahead step on sum_i w_i(phi) l_i, the meta loss at the
    looked-ahead parameters back-propagated to phi (Shu et al.'s released code, functionally)."""
    network = reweight.eager(model)
    params = trainable_parameters(network)
    losses = loss_fn(forward_on_scratch_buffers(network, params, x), y)
    weights = normalized_weights(weight_net, losses)
    grads = torch.autograd.grad((weights * losses).sum(), list(params.values()), create_graph=True)
    lookahead = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    meta_loss = reweight.meta_loss(network, lookahead, meta_x, meta_y, meta_loss_fn)
    gradient = torch.autograd.grad(meta_loss, list(weight_net.parameters()))
    return list(gradient), loss_fn(model(x), y)


IMPLEMENTATIONS = {"fwd": mwnet_gradient_fwd, "double_backprop": mwnet_gradient_double_backprop}


class MetaWeightNet(MetaMethod):
    """Uniformly shuffled batches; each step the weight net is updated on a meta batch through a
    look-ahead step, then weighs the batch (`impl`: how its meta gradient is computed, same value)."""

    def __init__(
        self,
        meta_batch_size: whole(1),
        meta_lr: number(gt=0, note=" (Adam's lr for the weight net; Shu et al. use 1e-3)") = 1e-3,
        hidden: whole(1, note=" (the weight net's hidden units; Shu et al. use 100)") = 100,
        impl: choice(*IMPLEMENTATIONS) = "fwd",
    ):
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.hidden = hidden
        self.impl = impl

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        with torch.random.fork_rng(devices=[]):  # the net's init must not shift the model's random stream
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
            self.weight_net = WeightNet(self.hidden).to(train.labels.device)
        self.optimizer = torch.optim.Adam(self.weight_net.parameters(), lr=self.meta_lr, weight_decay=WEIGHT_NET_DECAY)

    def state_dict(self) -> dict:
        return super().state_dict() | {"weight_net": self.weight_net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.weight_net.load_state_dict(state["weight_net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        meta_x, meta_y = self.meta_batch()
        gradient, losses = IMPLEMENTATIONS[self.impl](
            model, self.weight_net, x, y, meta_x, meta_y, lr, loss_fn=self.loss_fn, meta_loss_fn=cross_entropy
        )
        for parameter, grad in zip(self.weight_net.parameters(), gradient):
            parameter.grad = grad
        self.optimizer.step()
        with torch.no_grad():
            weights = normalized_weights(self.weight_net, losses)
        return StepLoss((weights * losses).sum(), weights)
