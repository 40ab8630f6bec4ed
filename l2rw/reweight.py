"""The L2RW example weights (Ren et al., 2018, eqs. 3-6), as pure functions.

w_i = max(0, -d L_meta(theta - lr * sum_j eps_j grad l_j(theta)) / d eps_i) at eps = 0,
then normalised to sum to 1 (all zeros stay zeros: the caller skips that step).

At eps = 0 the looked-ahead parameters are theta itself, so
    -d L_meta / d eps_i = lr * grad L_meta(theta) . grad l_i(theta),
and all n dot products are one Jacobian-vector product of the loss vector l(theta) in the
direction g = grad L_meta(theta). The learning rate scales every raw weight alike, so the
normalised weights do not depend on it. Three computations (`example_weights(impl=...)`):

- `fwd` (default): meta forward+backward gives g; one forward-mode pass of the training
  batch, parameters carrying g as their tangent, gives the losses (primal) and g . grad l_i
  (tangent) together. A step then costs meta forward+backward, that one dual forward and the
  update's backward.
- `double_backprop` (the published reference): a differentiable look-ahead SGD step, the meta
  loss at the looked-ahead parameters, back-propagated to eps.
- `last_layer`: the same dot products restricted to the final linear layer's parameters
  (cheaper, and different weights unless that layer holds all the parameters).

Each returns the weights and the per-example training losses of the step's real forward,
differentiable w.r.t. the parameters, so the update needs no further forward. BatchNorm uses
batch statistics everywhere; only that real forward updates its running statistics (once,
as a plain SGD step does): the meta and look-ahead forwards run on cloned buffers.
"""
import functools
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from l2rw.batchnorm_jvp import BatchNormTangentsInOutputDtype, FusedBatchNormTangents
from l2rw.errors import UserError
from l2rw.losses import LossFunction, cross_entropy

# forward_ad's first use loads torch's own JVP decompositions through torch.jit.script, which
# warns on every run; the deprecation is torch's to resolve, not something a user can act on
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)

class Reweighted(NamedTuple):
    weights: torch.Tensor  # (batch,), sums to 1, or all zeros when no example helps
    losses: torch.Tensor   # (batch,) per-example training losses, differentiable w.r.t. the parameters


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


def meta_loss(
    model: nn.Module, parameters: dict, meta_x: torch.Tensor, meta_y: torch.Tensor, loss_fn: LossFunction = cross_entropy
) -> torch.Tensor:
    return loss_fn(forward_on_scratch_buffers(model, parameters, meta_x), meta_y).mean()


def meta_gradient(
    model: nn.Module, meta_x: torch.Tensor, meta_y: torch.Tensor, loss=meta_loss, loss_fn: LossFunction = cross_entropy
) -> dict[str, torch.Tensor]:
    """g = grad of the mean meta loss w.r.t. each trainable parameter (no graph kept)."""
    params = trainable_parameters(model)
    return dict(zip(params, torch.autograd.grad(loss(model, params, meta_x, meta_y, loss_fn), list(params.values()))))


def dual_losses(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor],
    loss_fn: LossFunction = cross_entropy,
):
    """(losses, their directional derivatives along `direction`) from one forward-mode pass.

    `torch.autograd.forward_ad` rather than `torch.func.jvp`: the dual forward is the step's
    real forward, so BatchNorm may update the model's running statistics in place (functorch
    transforms forbid that), and reverse mode records the primal graph for the update's backward.
    The derivatives come back detached: nothing differentiates them, and a compiled backward
    would otherwise be built for them too.
    """
    with fwAD.dual_level(), math_attention():
        dual_params = {name: fwAD.make_dual(p, direction[name]) for name, p in trainable_parameters(model).items()}
        logits = functional_call(model, dual_params, (x,))  # the model's own buffers: updated once, here
        losses, derivatives = fwAD.unpack_dual(loss_fn(logits, y))
        return losses, derivatives.detach()


def math_attention():
    """Scaled dot-product attention by its composite math path: the fused kernels (flash, memory-
    efficient, cuDNN) have neither a forward-mode rule nor a double backward in this torch; the
    math path is matmuls and a softmax, which have both. Only the passes that need them run it."""
    return sdpa_kernel([SDPBackend.MATH])


def losses_along(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor],
    loss_fn: LossFunction = cross_entropy,
):
    """`dual_losses` in eager mode, with BatchNorm's tangent in three fused passes."""
    with FusedBatchNormTangents():
        return dual_losses(model, x, y, direction, loss_fn)


def dual_losses_under_autocast(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: dict[str, torch.Tensor],
    loss_fn: LossFunction = cross_entropy,
):
    """`dual_losses` with BatchNorm's tangents in their outputs' (autocast) dtype, so that it compiles."""
    with BatchNormTangentsInOutputDtype():
        return dual_losses(model, x, y, direction, loss_fn)


# How torch says an op has no forward-mode rule: "Trying to use forward AD with <op> that does not support it ..."
NO_FORWARD_RULE = re.compile(r"forward AD with (\S+) that does not support it")


def op_without_forward_rule(model: nn.Module, x: torch.Tensor) -> str | None:
    """The op that stops a forward-mode pass through `model` on inputs like `x` (a couple of
    examples), or None when the pass goes through: `impl=fwd` runs one each step. The pass runs
    on cloned buffers, records no graph and leaves the random stream as it was."""
    network = eager(model)
    with torch.no_grad(), fwAD.dual_level(), math_attention(), FusedBatchNormTangents(), \
            torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        dual = {name: fwAD.make_dual(p.detach(), torch.ones_like(p)) for name, p in trainable_parameters(network).items()}
        try:
            functional_call(network, (dual, {name: b.clone() for name, b in network.named_buffers()}), (x,))
        except NotImplementedError as error:
            if unsupported := NO_FORWARD_RULE.search(str(error)):
                return unsupported[1]
            raise
    return None


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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor,
    lr: float = 1.0, loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> Reweighted:
    """Meta forward+backward for g, then one dual forward: losses and g . grad l_i at once."""
    network, loss, dual = fwd_functions(model)
    direction = meta_gradient(network, meta_x, meta_y, loss, meta_loss_fn)
    losses, meta_alignment = dual(network, x, y, direction, loss_fn)
    return Reweighted(normalize(lr * meta_alignment), losses)


def weights_double_backprop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor,
    lr: float = 1.0, loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> Reweighted:
    """The reference computation: a differentiable look-ahead SGD step on sum_i eps_i * l_i,
    then the meta loss at the looked-ahead parameters back-propagated to eps."""
    network = eager(model)
    # the double backward of a channels_last convolution is slow on CPU (2.1 s against 1.4 s per
    # ResNet-32 step): the look-ahead graph runs on NCHW copies, which are the parameters for autograd
    params = {name: p.contiguous() for name, p in trainable_parameters(network).items()}
    eps = torch.zeros(len(y), device=x.device, dtype=x.dtype, requires_grad=True)
    with math_attention():
        losses = loss_fn(forward_on_scratch_buffers(network, params, x), y)
        grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
        lookahead = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
        (eps_grad,) = torch.autograd.grad(meta_loss(network, lookahead, meta_x, meta_y, meta_loss_fn), eps)
    # the step's real forward, on the compiled model when there is one
    return Reweighted(normalize(-eps_grad.detach()), loss_fn(model(x), y))


def head_split(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """(penultimate, head) with model(x) == head(penultimate(x)): the model's own `penultimate`
    and `head` (every model in l2rw.models has them), or, for an nn.Sequential ending in an
    nn.Linear, the layers before it and that layer."""
    if type(getattr(model, "head", None)) is nn.Linear and hasattr(model, "penultimate"):
        return model.penultimate, model.head
    if isinstance(model, nn.Sequential) and type(model[-1]) is nn.Linear:
        return model[:-1], model[-1]
    raise UserError(  # a subclass (model.normed_head's cosine layer) is no linear map of the features
        f"impl=last_layer needs the model's last layer: give {type(model).__name__} a `head` attribute (its final "
        "nn.Linear, not a normed head) and a `penultimate(x)` method returning that layer's input, so that "
        "model(x) == model.head(model.penultimate(x)); or use impl=fwd"
    )


class Penultimate(nn.Module):
    """A model's penultimate features as the forward of a module holding it: `functional_call`
    runs only a module's forward, and the meta features must run on cloned buffers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_split(self.model)[0](x)


def penultimate_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The training batch's features, on the model's own buffers: BatchNorm updates its running
    statistics here, once, as in a plain step."""
    return head_split(network)[0](x)


def meta_head_gradient(
    network: nn.Module, meta_x: torch.Tensor, meta_y: torch.Tensor, loss_fn: LossFunction
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(G, g_b): the mean meta loss's gradient w.r.t. the head's weight and bias (None without
    one), from a meta forward that records no graph through the network."""
    head = head_split(network)[1]
    with torch.no_grad():
        features = forward_on_scratch_buffers(Penultimate(network), {}, meta_x)
    parameters = [head.weight] if head.bias is None else [head.weight, head.bias]
    weight_gradient, *bias_gradient = torch.autograd.grad(loss_fn(head(features), meta_y).mean(), parameters)
    return weight_gradient, next(iter(bias_gradient), None)


def weights_last_layer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor,
    lr: float = 1.0, loss_fn: LossFunction = cross_entropy, meta_loss_fn: LossFunction = cross_entropy,
) -> Reweighted:
    """The weights with both gradients restricted to the final linear layer (`head_split`).

    With features h_i and e_i = d l_i / d logits_i, the head's gradient of l_i is (e_i h_i^T, e_i),
    so its dot product with the meta gradient (G, g_b) is e_i . (G h_i + g_b). One backward of
    sum_i l_i to the logits gives every e_i, exact for any loss_fn whose l_i depends on example
    i's logits only (cross-entropy: e_i = p_i - onehot(y_i)). A step costs a plain one plus a
    meta forward without graph. Under torch.compile the training batch's features run compiled.
    """
    network = eager(model)
    penultimate = penultimate_features if network is model else compiled(penultimate_features)
    weight_gradient, bias_gradient = meta_head_gradient(network, meta_x, meta_y, meta_loss_fn)
    features = penultimate(network, x)
    logits = head_split(network)[1](features)
    losses = loss_fn(logits, y)
    (logit_gradients,) = torch.autograd.grad(losses.sum(), logits, retain_graph=True)  # row i: e_i
    with torch.autocast(x.device.type, enabled=False):  # the dot products in the parameters' precision
        dtype = weight_gradient.dtype
        meta_directions = F.linear(features.detach().to(dtype), weight_gradient, bias_gradient)  # G h_i + g_b
        meta_alignment = (logit_gradients.to(dtype) * meta_directions).sum(1)
    return Reweighted(normalize(lr * meta_alignment), losses)


# name -> computation; each is called as (model, x, y, meta_x, meta_y, lr, loss_fn=..., meta_loss_fn=...)
IMPLEMENTATIONS = {"fwd": weights_fwd, "double_backprop": weights_double_backprop, "last_layer": weights_last_layer}


def example_weights(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    meta_inputs: torch.Tensor,
    meta_targets: torch.Tensor,
    loss_fn: LossFunction | None = None,
    impl: str = "fwd",
    meta_loss_fn: LossFunction | None = None,
) -> Reweighted:
    """The L2RW weights of a training batch and its per-example losses, for any training loop:

        weights, losses = example_weights(model, x, y, meta_x, meta_y)
        optimizer.zero_grad()
        (weights * losses).sum().backward()   # skip the step when weights.sum() == 0
        optimizer.step()

    `model`: any nn.Module, in the mode of a training step (or its torch.compile wrapper), taking
    floating-point `inputs` and `meta_inputs` with the examples along the first dimension;
    BatchNorm's running statistics are updated once, by the training forward whose losses are
    returned. `loss_fn(outputs, targets)`: one loss per example (reduction="none"), loss i
    depending on example i's outputs only; default: cross-entropy, whose targets are class indices
    (a 1-D torch.long tensor, each below the model's number of outputs) or class probabilities (a
    float tensor, examples x outputs). `meta_loss_fn`: the same kind of function, whose mean over
    the meta batch is the meta loss; default: `loss_fn`. `impl`: "fwd" (exact, one forward-mode pass), "double_backprop"
    (exact, the published look-ahead graph; the reference) or "last_layer" (both gradients
    restricted to the final linear layer: cheaper, other weights; see `weights_last_layer`).

    Returns (weights, losses): weights sum to 1, or are all zeros when no example's gradient
    agrees with the meta gradient; losses carry the training forward's graph, so the weighted
    sum back-propagates into every parameter for any optimizer.

    The weights are those of a look-ahead plain SGD step. Its learning rate scales every raw
    weight alike and the normalisation removes it, so none is asked for. With another optimizer
    (Adam, momentum) the actual update differs from that SGD step; the weights still rank
    examples by how well their loss gradient agrees with the meta loss's gradient.
    """
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"impl={impl!r} is unknown; use one of {', '.join(IMPLEMENTATIONS)}")
    check_arguments(model, inputs, targets, meta_inputs, meta_targets)
    check_targets(model, meta_inputs, {"targets": targets if loss_fn is None else None,
                                       "meta_targets": meta_targets if (meta_loss_fn or loss_fn) is None else None})
    loss_fn = loss_fn or cross_entropy
    result = IMPLEMENTATIONS[impl](
        model, inputs, targets, meta_inputs, meta_targets, loss_fn=loss_fn, meta_loss_fn=meta_loss_fn or loss_fn
    )
    if result.losses.shape != (len(targets),):
        raise UserError(
            f"loss_fn returned shape {tuple(result.losses.shape)} for a batch of {len(targets)}; it must return one "
            "loss per example, e.g. F.cross_entropy(outputs, targets, reduction='none')"
        )
    if not torch.isfinite(result.weights).all():
        raise ValueError("the weights are not finite: the training or meta loss is NaN or infinite at these parameters")
    return result


def check_arguments(model, inputs, targets, meta_inputs, meta_targets) -> None:
    """A ValueError naming the argument for what would otherwise end in a torch internal error,
    NaN weights or silent zeros."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not trainable_parameters(eager(model)):
        raise ValueError("model has no parameter with requires_grad=True: there is no gradient to compare examples by")
    for name, value in (("inputs", inputs), ("targets", targets), ("meta_inputs", meta_inputs), ("meta_targets", meta_targets)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__} (torch.as_tensor converts it)")
        if value.dim() == 0:
            raise ValueError(f"{name} must hold one entry per example along its first dimension, got a 0-d tensor")
    for name, value in (("inputs", inputs), ("meta_inputs", meta_inputs)):
        if not value.is_floating_point():  # a weight's gradient needs floating-point inputs to the layers
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}; convert it, e.g. "
                            f"{name}.float() / 255 for uint8 images")
    for name, value, labels in (("inputs", inputs, targets), ("meta_inputs", meta_inputs, meta_targets)):
        if len(value) == 0:
            raise ValueError(f"{name} is empty: the weights need at least one example")
        if len(value) != len(labels):
            raise ValueError(f"{name} has {len(value)} examples but its targets {len(labels)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        if len(value) == 1 and model.training and any(
            isinstance(module, nn.modules.batchnorm._BatchNorm) for module in eager(model).modules()
        ):
            raise ValueError(f"{name} has one example: BatchNorm in training mode needs at least two")


# The dtypes F.cross_entropy takes class indices in
CLASS_INDEX_DTYPES = (torch.long, torch.uint8)


def check_targets(model: nn.Module, meta_inputs: torch.Tensor, named_targets: dict[str, torch.Tensor | None]) -> None:
    """A ValueError naming the targets that the default cross-entropy cannot take (those of a
    user's loss_fn are None here, that loss's to judge): class indices out of the model's range,
    or neither class indices nor class probabilities for each of its outputs. The number of
    outputs comes from a forward of two meta examples that records nothing."""
    named_targets = {name: targets for name, targets in named_targets.items() if targets is not None}
    if not named_targets:
        return
    # dropout's draws in that forward must not shift the caller's random stream
    with torch.no_grad(), torch.random.fork_rng(devices=[meta_inputs.device] if meta_inputs.is_cuda else []):
        classes = forward_on_scratch_buffers(eager(model), {}, meta_inputs[:2]).shape[-1]
    for name, targets in named_targets.items():
        if targets.dtype in CLASS_INDEX_DTYPES and targets.dim() == 1:
            outside = targets[(targets < 0) | (targets >= classes)]
            if len(outside):
                raise ValueError(f"{name} holds class {int(outside[0])}, but the model has {classes} outputs: class "
                                 f"indices must be in [0, {classes - 1}]")
        elif targets.is_floating_point() and targets.dim() == 2:
            if targets.shape[1] != classes:
                raise ValueError(f"{name} holds {targets.shape[1]} class probabilities per example, but the model has "
                                 f"{classes} outputs")
        else:
            raise ValueError(
                f"{name} must be class indices (a 1-D torch.long tensor) or class probabilities (a float tensor, examples "
                f"x classes) for the default cross-entropy, got a {targets.dim()}-D {targets.dtype} tensor; convert it, "
                "or pass a loss_fn that takes it"
            )
