"""The L2RW example weights (Ren et al., 2018, eqs. 3-6), as pure functions.

w_i = max(0, -d L_meta(theta - lr * sum_j eps_j grad l_j(theta)) / d eps_i) at eps = 0,
then normalised to sum to 1 (all zeros stay zeros: the caller skips that step).

Parameters and buffers are passed explicitly and the model runs through
`torch.func.functional_call`, so nothing is copied or mutated: BatchNorm uses batch
statistics here and its running statistics are left for the real update to change.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def normalize(raw: torch.Tensor) -> torch.Tensor:
    """relu(raw) scaled to sum 1; all zeros when no entry is positive."""
    positive = raw.clamp(min=0)
    total = positive.sum()
    return positive / total if total > 0 else positive


def weights_double_backprop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    meta_x: torch.Tensor,
    meta_y: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """The reference computation: a differentiable look-ahead SGD step on sum_i eps_i * l_i,
    then the meta loss at the looked-ahead parameters back-propagated to eps."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def forward(parameters, inputs):
        # cloned buffers absorb BatchNorm's running-stat updates, keeping the model untouched
        scratch = {name: b.clone() for name, b in buffers.items()}
        return functional_call(model, (parameters, scratch), (inputs,))

    eps = torch.zeros(len(y), device=x.device, dtype=x.dtype, requires_grad=True)
    losses = F.cross_entropy(forward(params, x), y, reduction="none")
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    lookahead = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    meta_loss = F.cross_entropy(forward(lookahead, meta_x), meta_y)
    (eps_grad,) = torch.autograd.grad(meta_loss, eps)
    return normalize(-eps_grad.detach())
