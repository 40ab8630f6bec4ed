"""The L2RW example weights (Ren et al., 2018, eqs. 3-6), as pure functions.

w_i = max(0, -d L_meta(theta - lr * sum_j eps_j grad l_j(theta)) / d eps_i) at eps = 0,
then normalised to sum to 1 (all zeros stay zeros: the caller skips that step).

At eps = 0 the looked-ahead parameters are theta itself, so
    -d L_meta / d eps_i = lr * grad L_meta(theta) . grad l_i(theta),
and all n dot products are one Jacobian-vector product of the loss vector l(theta) in the
direction g = grad L_meta(theta). Two computations of the same numbers:

- `weights_fwd` (default): meta forward+backward gives g; one forward-mode pass of the
  training batch, parameters carrying g as their tangent, gives the losses (primal) and
  g . grad l_i (tangent) together. A step then costs meta forward+backward, that one dual
  forward and the update's backward.
- `weights_double_backprop` (the published reference): a differentiable look-ahead SGD step,
  the meta loss at the looked-ahead parameters, back-propagated to eps.

Both return the weights and the per-example training losses of the step's real forward,
differentiable w.r.t. the parameters, so the update needs no further forward. BatchNorm uses
batch statistics everywhere; only that real forward updates its running statistics (once,
as a plain SGD step does): the meta and look-ahead forwards run on cloned buffers.
"""
import functools
import warnings
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from l2rw.batchnorm_jvp import BatchNormTangentsInOutputDtype, FusedBatchNormTangents

# forward_ad's first use loads torch's own JVP decompositions through torch.jit.script, which
# warns on every run; the deprecation is torch's to resolve, not something a user can act on
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)


class Reweighted(NamedTuple):
    weights: torch.Tensor  # (batch,), sums to 1, or all zeros when no example helps
    losses: torch.Tensor   # (batch,) per-example cross-entropy, differentiable w.r.t. the parameters


def normalize(raw: torch.Tensor) -> torch.Tensor:
    """relu(raw) scaled to sum 1; all zeros when no entry is positive."""
    positive = raw.clamp(min=0)
    total = positive.sum()
    return positive / total if total > 0 else positive


def eager(model: nn.Module) -> nn.Module:
    """The module inside a `torch.compile` wrapper (they share parameters and buffers). The weight
    computations run it through `functional_call` in their own functions, which `fwd_functions`
    compiles on its own: a compiled module cannot carry forward-mode tangents or double backward."""
    return getattr(model, "_orig_mod", model)


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def forward_on_scratch_buffers(model: nn.Module, parameters: dict, inputs: torch.Tensor) -> torch.Tensor:
    """The model at `parameters`; cloned buffers absorb BatchNorm's running-stat updates,
    keeping the model's own untouched."""
    scratch = {name: b.clone() for name, b in model.named_buffers()}
    return functional_call(model, (parameters, scratch), (inputs,))


def meta_loss(model: nn.Module, parameters: dict, meta_x: torch.Tensor, meta_y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(forward_on_scratch_buffers(model, parameters, meta_x), meta_y)


def meta_gradient(model: nn.Module, meta_x: torch.Tensor, meta_y: torch.Tensor, loss=meta_loss) -> dict[str, torch.Tensor]:
    """g = grad of the mean meta loss w.r.t. each trainable parameter (no graph kept)."""
    params = trainable_parameters(model)
    return dict(zip(params, torch.autograd.grad(loss(model, params, meta_x, meta_y), list(params.values()))))


def dual_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor]):
    """(losses, their directional derivatives along `direction`) from one forward-mode pass.

    `torch.autograd.forward_ad` rather than `torch.func.jvp`: the dual forward is the step's
    real forward, so BatchNorm may update the model's running statistics in place (functorch
    transforms forbid that), and reverse mode records the primal graph for the update's backward.
    The derivatives come back detached: nothing differentiates them, and a compiled backward
    would otherwise be built for them too.
    """
    with fwAD.dual_level():
        dual_params = {name: fwAD.make_dual(p, direction[name]) for name, p in trainable_parameters(model).items()}
        logits = functional_call(model, dual_params, (x,))  # the model's own buffers: updated once, here
        losses, derivatives = fwAD.unpack_dual(F.cross_entropy(logits, y, reduction="none"))
        return losses, derivatives.detach()


def losses_along(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor]):
    """`dual_losses` in eager mode, with BatchNorm's tangent in three fused passes."""
    with FusedBatchNormTangents():
        return dual_losses(model, x, y, direction)


def dual_losses_under_autocast(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor]):
    """`dual_losses` with BatchNorm's tangents in their outputs' (autocast) dtype, so that it compiles."""
    with BatchNormTangentsInOutputDtype():
        return dual_losses(model, x, y, direction)


@functools.cache
def compiled(function):
    """`function` under torch.compile, built once: Inductor fuses the tangent's elementwise work
    (PyTorch's own BatchNorm rule included), which eager mode runs as separate passes."""
    return torch.compile(function, fullgraph=True)


def fwd_functions(model: nn.Module):
    """(network, meta loss, dual forward) as `weights_fwd` runs them: compiled when the model is
    (`hardware.compile=true`), else eager, the dual forward with the fused BatchNorm tangent."""
    network = eager(model)
    if network is model:
        return network, meta_loss, losses_along
    if any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda")):
        return network, compiled(meta_loss), compiled(dual_losses_under_autocast)
    return network, compiled(meta_loss), compiled(dual_losses)


def weights_fwd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor, lr: float
) -> Reweighted:
    """Meta forward+backward for g, then one dual forward: losses and g . grad l_i at once."""
    network, loss, dual = fwd_functions(model)
    losses, meta_alignment = dual(network, x, y, meta_gradient(network, meta_x, meta_y, loss))
    return Reweighted(normalize(lr * meta_alignment), losses)


def weights_double_backprop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor, lr: float
) -> Reweighted:
    """The reference computation: a differentiable look-ahead SGD step on sum_i eps_i * l_i,
    then the meta loss at the looked-ahead parameters back-propagated to eps."""
    network = eager(model)
    # the double backward of a channels_last convolution is slow on CPU (2.1 s against 1.4 s per
    # ResNet-32 step): the look-ahead graph runs on NCHW copies, which are the parameters for autograd
    params = {name: p.contiguous() for name, p in trainable_parameters(network).items()}
    eps = torch.zeros(len(y), device=x.device, dtype=x.dtype, requires_grad=True)
    losses = F.cross_entropy(forward_on_scratch_buffers(network, params, x), y, reduction="none")
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    lookahead = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    meta_loss = F.cross_entropy(forward_on_scratch_buffers(network, lookahead, meta_x), meta_y)
    (eps_grad,) = torch.autograd.grad(meta_loss, eps)
    # the step's real forward, on the compiled model when there is one
    return Reweighted(normalize(-eps_grad.detach()), F.cross_entropy(model(x), y, reduction="none"))


IMPLEMENTATIONS = {"fwd": weights_fwd, "double_backprop": weights_double_backprop}
