"""Meta-Weight-Net (Shu et al., NeurIPS 2019): a small MLP maps each example's loss to its weight.

Each step, with V the MLP (parameters phi), w(phi, l) the batch's weights made from the V(l_i) and
F(phi, l) = sum_i w_i l_i:
1. look ahead: theta' = theta - lr * grad_theta F(phi, l(theta));
2. update phi by the gradient of the meta loss at theta', through theta'(phi);
3. update the model on sum_i w_i l_i with the new phi's weights (no gradient through w).
In every variant V is 1-100-1 with a ReLU and a sigmoid output, the look-ahead is plain SGD at the
model's current learning rate and the meta loss is cross-entropy on a clean meta batch. The
authors released two scripts that differ in three choices; `variant` picks one:
- `imbalance` (github.com/xjtushujun/Meta-weight-net_class-imbalance,
  meta-weight-net-class-imbalance.py): w_i = V(l_i) / sum_j V(l_j), all zeros when every V(l_j)
  underflowed to 0; V sees the loss with its graph, so the look-ahead gradient also carries the
  terms sum_j l_j grad_theta w_j; V is trained by SGD, lr 1e-5, momentum 0.9, Nesterov, weight
  decay 5e-4.
- `noise` (github.com/xjtushujun/meta-weight-net, MW-Net.py): w_i = V(l_i) / n; V sees the loss
  detached; V is trained by Adam, lr 1e-3, weight decay 1e-4.
- `hybrid`: the noise script's detached loss and Adam with the imbalance script's normalisation,
  which no released script runs; this method's only behaviour before the variants existed.

Step 2 without the look-ahead's double backward: with c_i(phi, l) = dF/dl_i (w_i itself when V
sees the loss detached), grad_theta F = sum_i c_i grad l_i(theta), so by the chain rule
    d L_meta(theta') / d phi = -lr * d/d phi sum_i c_i(phi, l) (g' . grad l_i(theta)),
with g' = grad L_meta(theta'). The n dot products g' . grad l_i are one forward-mode pass along g'
(`l2rw.reweight.losses_along`, L2RW's weight computation); c comes from a double backward through
V alone, and the sum's gradient is one more backward through V. `mwnet_gradient_double_backprop`
is the released graph, kept as the reference.
"""
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.losses import LossFunction, cross_entropy
from l2rw.methods.base import META_BATCH_SIZE, MetaMethod, StepLoss, own_random_stream
from l2rw.reweight import forward_on_scratch_buffers, trainable_parameters
from l2rw.run.options import choice, number, optional, whole
from l2rw.training.network import tensors_problem
from l2rw.training.optimization import optimizer_problem


class WeightNet(nn.Module):
    """Loss -> weight in (0, 1): Linear(1, hidden), ReLU, Linear(hidden, 1), sigmoid."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.layers(losses[:, None]).squeeze(1)


def sum_to_one(raw: torch.Tensor) -> torch.Tensor:
    """raw / sum(raw); all zeros stay zeros, so the trainer skips that step instead of dividing
    by 0. A tensor condition, not a Python one: no host sync."""
    total = raw.sum()
    return raw / torch.where(total > 0, total, torch.ones_like(total))


def over_batch_size(raw: torch.Tensor) -> torch.Tensor:
    return raw / len(raw)


class Variant(NamedTuple):
    normalize: Callable[[torch.Tensor], torch.Tensor]  # V's outputs -> the batch's weights
    loss_keeps_graph: bool  # V's input is the loss itself, not a detached copy, in the look-ahead
    optimizer: Callable[..., torch.optim.Optimizer]  # (V's parameters, lr=...) -> V's optimizer
    meta_lr: float  # that optimizer's learning rate in the released script


VARIANTS = {
    # meta-weight-net-class-imbalance.py: normalisation and its guard 161-166, V(cost_v) undetached 157-159,
    # SGD 112-114 with the script's argparse defaults for momentum, Nesterov and weight decay (38-40)
    "imbalance": Variant(sum_to_one, True, partial(torch.optim.SGD, momentum=0.9, nesterov=True, weight_decay=5e-4), 1e-5),
    # MW-Net.py: V(cost_v.data) 206, the weighted sum over len(cost_v) 207, Adam 274-275
    "noise": Variant(over_batch_size, False, partial(torch.optim.Adam, weight_decay=1e-4), 1e-3),
    "hybrid": Variant(sum_to_one, False, partial(torch.optim.Adam, weight_decay=1e-4), 1e-3),
}


def batch_weights(weight_net: nn.Module, losses: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The batch's weights, differentiable w.r.t. V's parameters (and w.r.t. the losses when the
    variant's V sees their graph). `weight_net`: the batch's losses -> V's outputs."""
    return variant.normalize(weight_net(losses if variant.loss_keeps_graph else losses.detach()))


def lookahead_coefficients(weight_net: nn.Module, losses: torch.Tensor, variant: Variant) -> torch.Tensor:
    """c_i = dF/dl_i with F = sum_i w_i(phi, l) l_i, differentiable w.r.t. V's parameters: the
    look-ahead step's gradient is sum_i c_i grad l_i(theta)."""
    point = losses.detach().requires_grad_()
    (coefficients,) = torch.autograd.grad(
        (batch_weights(weight_net, point, variant) * point).sum(), point, create_graph=True
    )
    return coefficients


def mwnet_gradient_fwd(
    model: nn.Module, weight_net: nn.Module, x, y, meta_x, meta_y, lr: float, variant: Variant,
    loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(d L_meta(theta') / d phi for each of V's parameters, the training losses of the step's
    real forward at theta, differentiable w.r.t. the model's parameters)."""
    network = reweight.eager(model)
    params = trainable_parameters(network)
    first_losses = loss_fn(forward_on_scratch_buffers(network, params, x), y)
    coefficients = lookahead_coefficients(weight_net, first_losses, variant)
    # theta', detached: phi reaches the meta loss through the dot products below
    grads = torch.autograd.grad((coefficients.detach() * first_losses).sum(), list(params.values()))
    lookahead = {name: (p - lr * g).detach().requires_grad_() for (name, p), g in zip(params.items(), grads)}
    meta_direction = dict(zip(lookahead, torch.autograd.grad(
        reweight.meta_loss(network, lookahead, meta_x, meta_y, meta_loss_fn), list(lookahead.values())
    )))
    losses, alignment = reweight.losses_along(network, x, y, meta_direction, loss_fn)
    gradient = torch.autograd.grad(-lr * (alignment * coefficients).sum(), list(weight_net.parameters()))
    return list(gradient), losses


def mwnet_gradient_double_backprop(
    model: nn.Module, weight_net: nn.Module, x, y, meta_x, meta_y, lr: float, variant: Variant,
    loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The reference: a differentiable look-ahead step on sum_i w_i l_i, the weights from the
    variant's V input and normalisation, the meta loss at the looked-ahead parameters
    back-propagated to phi (the released scripts' graph, functionally)."""
    network = reweight.eager(model)
    params = trainable_parameters(network)
    with reweight.math_attention():  # the look-ahead graph is differentiated twice
        losses = loss_fn(forward_on_scratch_buffers(network, params, x), y)
        weights = batch_weights(weight_net, losses, variant)
        grads = torch.autograd.grad((weights * losses).sum(), list(params.values()), create_graph=True)
        lookahead = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
        meta_loss = reweight.meta_loss(network, lookahead, meta_x, meta_y, meta_loss_fn)
        gradient = torch.autograd.grad(meta_loss, list(weight_net.parameters()))
    return list(gradient), loss_fn(model(x), y)


IMPLEMENTATIONS = {"fwd": mwnet_gradient_fwd, "double_backprop": mwnet_gradient_double_backprop}


def weight_net_state(weight_net: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {"weight_net": weight_net.state_dict(), "optimizer": optimizer.state_dict()}


def load_weight_net(state: dict, weight_net: nn.Module, optimizer: torch.optim.Optimizer, architecture: str) -> None:
    """Load `weight_net_state`'s parts; ValueError, saying why, for a net that is not `architecture`
    or an optimizer state this optimizer does not keep (nothing is loaded then)."""
    if tensors_problem("weight net", state["weight_net"], weight_net.state_dict()):
        raise ValueError(f"its weight net is not {architecture}")
    if problem := optimizer_problem(state["optimizer"], optimizer):
        raise ValueError(f"its weight net's optimizer does not fit: {problem}")
    weight_net.load_state_dict(state["weight_net"])
    optimizer.load_state_dict(state["optimizer"])


class MetaWeightNet(MetaMethod):
    """Uniformly shuffled batches; each step the weight net is updated on a meta batch through a
    look-ahead step, then weighs the batch (the module's docstring has the step and the variants)."""

    implementations = tuple(IMPLEMENTATIONS)

    def __init__(
        self,
        meta_batch_size: META_BATCH_SIZE,
        variant: choice(*VARIANTS, doc="which released script's weights, loss input and optimizer for the weight net: "
                                       "`imbalance`: meta-weight-net-class-imbalance.py; `noise`: MW-Net.py; `hybrid`: "
                                       "neither (Adam and a detached loss, weights summing to 1). The default follows "
                                       "`noise.kind`: `noise` under label noise, else `imbalance`"),
        meta_lr: optional(number(gt=0, le=1, note=" (the weight net's learning rate)"),
                          "for the variant's released one: 1e-5 for imbalance, 1e-3 for noise and hybrid",
                          doc="the step size of the variant's optimizer for the weight net (SGD for imbalance, Adam "
                              "otherwise)") = None,
        hidden: whole(1, note=" (the weight net's hidden units; Shu et al. use 100)",
                      doc="the weight net is Linear(1, hidden), ReLU, Linear(hidden, 1), sigmoid") = 100,
        impl: choice(*IMPLEMENTATIONS, doc="how the weight net's meta gradient is computed: `fwd`: one forward-mode "
                                           "pass along the meta gradient; `double_backprop`: the released graph, the "
                                           "reference (the same values)") = "fwd",
    ):
        self.meta_batch_size = meta_batch_size
        self.variant = variant
        self.meta_lr = VARIANTS[variant].meta_lr if meta_lr is None else meta_lr
        self.hidden = hidden
        self.impl = impl

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        with own_random_stream(generator):
            self.weight_net = WeightNet(self.hidden).to(train.labels.device)
        self.optimizer = VARIANTS[self.variant].optimizer(self.weight_net.parameters(), lr=self.meta_lr)

    def state_dict(self) -> dict:
        return super().state_dict() | weight_net_state(self.weight_net, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        load_weight_net(state, self.weight_net, self.optimizer, f"Linear(1, {self.hidden}), ReLU, Linear({self.hidden}, 1), sigmoid")

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        meta_x, meta_y = self.meta_batch()
        gradient, losses = IMPLEMENTATIONS[self.impl](
            model, self.weight_net, x, y, meta_x, meta_y, lr, VARIANTS[self.variant], loss_fn=self.loss_fn,
            meta_loss_fn=cross_entropy,
        )
        for parameter, grad in zip(self.weight_net.parameters(), gradient):
            parameter.grad = grad
        self.optimizer.step()
        with torch.no_grad():
            weights = batch_weights(self.weight_net, losses, VARIANTS[self.variant])
        return StepLoss((weights * losses).sum(), weights)
