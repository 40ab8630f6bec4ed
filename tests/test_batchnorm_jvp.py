"""The fused train-mode BatchNorm tangent against PyTorch's own forward-mode rule."""
import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from l2rw.batchnorm_jvp import FusedBatchNormTangents


def batch_norm_tangent(fused: bool, x, weight, bias, tangents: dict, running: tuple):
    """(output, tangent, running mean, running var) of train-mode F.batch_norm at dual inputs."""
    running_mean, running_var = (r.clone() for r in running)
    with fwAD.dual_level():
        duals = {
            name: fwAD.make_dual(value, tangents[name]) if name in tangents and value is not None else value
            for name, value in (("input", x), ("weight", weight), ("bias", bias))
        }
        with FusedBatchNormTangents() if fused else contextlib.nullcontext():
            out = F.batch_norm(duals["input"], running_mean, running_var, duals["weight"], duals["bias"], training=True, momentum=0.3)
        primal, tangent = fwAD.unpack_dual(out)
    return primal, tangent, running_mean, running_var


# without affine parameters only the input can carry a tangent
CASES = [(True, ("input",)), (True, ("weight", "bias")), (True, ("input", "weight")), (True, ("input", "weight", "bias")), (False, ("input",))]


@pytest.mark.parametrize("affine, tangent_of", CASES)
def test_fused_tangent_equals_pytorchs_rule(affine, tangent_of):
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 3, dtype=torch.double) * 3 + 1
    weight, bias = (torch.randn(4, dtype=torch.double), torch.randn(4, dtype=torch.double)) if affine else (None, None)
    tangents = {"input": torch.randn_like(x), "weight": torch.randn(4, dtype=torch.double), "bias": torch.randn(4, dtype=torch.double)}
    tangents = {name: tangents[name] for name in tangent_of}
    running = (torch.randn(4, dtype=torch.double), torch.rand(4, dtype=torch.double) + 0.5)
    ours = batch_norm_tangent(True, x, weight, bias, tangents, running)
    pytorch = batch_norm_tangent(False, x, weight, bias, tangents, running)
    assert ours[1] is not None and ours[1].abs().max() > 0.1
    for name, a, b in zip(("output", "tangent", "running mean", "running var"), ours, pytorch):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0, msg=name)
