"""A cheaper forward-mode rule for BatchNorm with batch statistics, used by `reweight.weights_fwd`.

PyTorch's built-in tangent rule for train-mode batch norm spends about a dozen separate
elementwise passes over the activation; on CPU that made the tangent of a ResNet-32 forward
cost more than its convolutions. In train mode, with xhat = (x - mean) * invstd, the tangent is

    d BN = gamma * invstd * (dx - mean(dx) - xhat * mean(dx * xhat)) + d gamma * xhat + d beta
         = gamma * invstd * dx + xhat * (d gamma - gamma * invstd * mean(dx * xhat))
                               + (d beta - gamma * invstd * mean(dx)),

per channel a scale of dx plus an affine map of xhat. Three passes over the activation compute
it: the fused reduction of native_batch_norm_backward (sum(dx), sum(dx * xhat)), one
inference-mode batch_norm (the xhat terms) and one in-place addcmul (the dx term).

Everything else (running statistics, eval mode, the backward pass) is what F.batch_norm does.
"""
import inspect

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)


class TrainModeBatchNorm(torch.autograd.Function):
    """F.batch_norm(training=True): same output, running-statistic update and gradient,
    with the tangent computed by the fused kernels above."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, momentum: float, eps: float):
        output, mean, invstd = torch.ops.aten.native_batch_norm(
            input, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.save_for_forward(input, weight, mean, invstd)
        ctx.eps = eps
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight, mean, invstd = ctx.saved_tensors
        grad_input, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_output, input, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_input, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(ctx, input_tangent, weight_tangent, bias_tangent, *_):
        input, weight, mean, invstd = ctx.saved_tensors
        zeros = torch.zeros_like(mean)
        # d BN = gamma*invstd*dx + xhat*(d gamma - gamma*invstd*mean(dx*xhat)) + (d beta - gamma*invstd*mean(dx)):
        # one fused reduction, one inference-mode batch_norm for the xhat terms, one addcmul
        scale = invstd if weight is None else weight * invstd
        xhat_coefficient = zeros if weight_tangent is None else weight_tangent
        constant = zeros if bias_tangent is None else bias_tangent
        if input_tangent is not None:
            sum_dx_xhat, sum_dx = torch.ops.aten.native_batch_norm_backward(
                input_tangent, input, weight, None, None, mean, invstd, True, ctx.eps, [False, True, True]
            )[1:]
            count = input.numel() / input.shape[1]
            xhat_coefficient = xhat_coefficient - scale * sum_dx_xhat / count
            constant = constant - scale * sum_dx / count
        batch_variance = invstd.pow(-2) - ctx.eps  # batch_norm adds eps back
        tangent = F.batch_norm(input, mean, batch_variance, xhat_coefficient, constant, training=False, eps=ctx.eps)
        if input_tangent is not None:
            tangent.addcmul_(input_tangent, scale.view(-1, *[1] * (input.dim() - 2)))
        return tangent


class FusedBatchNormTangents(TorchFunctionMode):
    """Inside `with FusedBatchNormTangents():`, train-mode F.batch_norm calls (every
    nn.BatchNorm*d in training) go through `TrainModeBatchNorm`; other calls are untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            call = BATCH_NORM_SIGNATURE.bind(*args, **kwargs)
            call.apply_defaults()
            a = call.arguments
            if a["training"]:
                return TrainModeBatchNorm.apply(
                    a["input"], a["weight"], a["bias"], a["running_mean"], a["running_var"], a["momentum"], a["eps"]
                )
        return func(*args, **kwargs)


class BatchNormTangentsInOutputDtype(TorchFunctionMode):
    """Under autocast, PyTorch's own forward-mode rule for batch_norm gives a bfloat16 output a
    float32 tangent; the next convolution then gets mixed dtypes, which torch.compile's tracing
    rejects (eager mode lets it through). Inside `with BatchNormTangentsInOutputDtype():`, every
    F.batch_norm tangent is cast to its output's dtype, the dtype `TrainModeBatchNorm` gives it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if func is F.batch_norm:
            primal, tangent = fwAD.unpack_dual(output)
            if tangent is not None and tangent.dtype != primal.dtype:
                return fwAD.make_dual(primal, tangent.to(primal.dtype))
        return output
