"""scripts/profile_fwd_step.py: the phases of both steps, and the split of the forward with its
tangent into the tangent's convolutions and the rest."""
import argparse
import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from l2rw import reweight
from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def profiler():
    return load_script("profile_fwd_step")


# ResNet-32 at its 8-layer form where a check holds for any depth (BatchNorm, residual blocks and a
# tangent through each are all there); the count of its convolutions is checked at full depth
SHALLOW_RESNET = ["model.blocks_per_stage=1"]


def tiny_args(model: str, *overrides: str) -> argparse.Namespace:
    return argparse.Namespace(model=model, hardware="cpu", batch=8, meta_batch=4, repeats=1, overrides=list(overrides))


@pytest.mark.parametrize("model, first_layer_convolutions", [("lenet", 2), ("resnet32", 31)])
def test_tangent_convolutions_are_two_per_layer_and_one_at_the_image(profiler, monkeypatch, model, first_layer_convolutions):
    steps = profiler.StepPhases(tiny_args(model))
    convolutions = [m for m in steps.network.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == first_layer_convolutions
    forward, backward = steps.forward_with_tangent_convolutions()  # computes the meta gradient: before counting
    calls = []
    original = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, *a: calls.append(self) or original(self, *a))
    forward()
    backward()
    # the primal convolution, x with dW, and (not at the image) the input tangent's convolution with W
    assert len(calls) == 3 * len(convolutions) - 1
    assert all(not m._forward_hooks for m in convolutions)  # the model is left as it was


def test_profile_reports_every_phase_of_both_steps(profiler):
    result = profiler.profile_steps(tiny_args("lenet"))
    assert list(result["sgd"]) == profiler.SGD_PHASES and list(result["l2rw fwd"]) == profiler.FWD_PHASES
    assert list(result["split"]) == profiler.SPLIT_PHASES


def test_the_fwd_phases_compute_the_weights_of_the_fwd_step(profiler):
    """Timed apart, the phases still are `reweight.weights_fwd`: the same weights on the same model and batches."""
    steps = profiler.StepPhases(tiny_args("resnet32", *SHALLOW_RESNET))
    expected = reweight.weights_fwd(copy.deepcopy(steps.network), steps.x, steps.y, steps.meta_x, steps.meta_y, steps.lr)
    meta_forward_backward, forward_with_tangent, *_ = steps.l2rw_fwd()
    meta_forward_backward()
    forward_with_tangent()
    torch.testing.assert_close(steps.fwd_state["weights"], expected.weights)


def test_split_ratios_on_a_hand_made_profile(profiler):
    """sgd: forward 1 + backward 2 + step 1 = 4 s; fwd step: 3 + 3 + 2 + 1 = 9 s, its forward with
    tangent 3 s; the convolutions-only forward 2 s, so the tangent's other work is 1 s."""
    result = {
        "sgd": {"forward": 1.0, "backward": 2.0, "optimizer step": 1.0},
        "l2rw fwd": {"meta forward+backward": 3.0, "forward with tangent": 3.0, "update backward": 2.0, "optimizer step": 1.0},
        "split": {"forward + tangent convolutions only": 2.0, "backward": 2.0},
    }
    assert profiler.split_ratios(result) == {
        "forward with tangent, x plain forward": 3.0,
        "forward + tangent convolutions only, x plain forward": 2.0,
        "tangent's elementwise work, x sgd step": 0.25,
        "l2rw fwd step with that work free (the floor), x sgd step": 2.0,
    }


@pytest.mark.slow
def test_compiled_split_keeps_the_tangent_convolutions(profiler):
    """Compiled, the split pass must still run the tangent's convolutions, whose results nothing
    reads: a compiled graph drops work whose result is not kept."""
    torch.compiler.reset()
    args = tiny_args("lenet")
    args.overrides = ["hardware.compile=true"]
    steps = profiler.StepPhases(args)
    forward, backward = steps.forward_with_tangent_convolutions()
    forward()  # compiles
    backward()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        forward()
    convolutions = [e for e in trace.events() if e.name == "aten::convolution"]
    assert len(convolutions) == 3 * 2 - 1  # LeNet: two layers, the image without a tangent
    torch.compiler.reset()


@pytest.mark.parametrize("model", ["lenet", "resnet32"])
def test_fwd_step_does_two_sgd_steps_work_plus_two_forwards(profiler, model):
    """At equal batches: meta forward+backward (an sgd step's work), a forward whose every
    convolution and linear layer runs three times (primal, input tangent, weight tangent; torch's
    JVP runs the input tangent's convolution at the image too, on zeros), and the update's backward."""
    args = tiny_args(model, *(SHALLOW_RESNET if model == "resnet32" else []))
    args.meta_batch = args.batch
    flops = profiler.step_flops(profiler.StepPhases(args))
    assert flops["l2rw fwd step"] == 2 * flops["sgd step"] + 2 * flops["sgd forward"]
    assert flops["l2rw double_backprop step"] > flops["l2rw fwd step"]


def test_bf16_weights_are_compared_with_float32_ones(profiler):
    args = tiny_args("resnet32", "hardware.amp=bf16")  # full depth: bf16 moves no weight of the 8-layer form
    comparison = profiler.weights_against_float32(profiler.StepPhases(args))
    # bf16 keeps 8 bits of mantissa: a weight moves by a few hundredths of itself, and not at all in float32
    assert 0 < comparison["largest difference"] < 0.05 * comparison["largest float32 weight"]
