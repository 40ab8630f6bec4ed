"""Where the time of an l2rw fwd step goes, next to a plain sgd step, measured in one process.

    python scripts/profile_fwd_step.py                              # resnet32, batch 100, meta batch 100, CPU
    python scripts/profile_fwd_step.py --model lenet --repeats 41
    python scripts/profile_fwd_step.py --overrides hardware.channels_last=false
    python scripts/profile_fwd_step.py --hardware cuda

The two steps are taken apart into the calls `l2rw.training.loop.fit` makes (sgd: forward, backward,
optimizer step; l2rw fwd: `reweight.meta_gradient`, the dual forward, the update's
backward, optimizer step) and timed phase by phase, the steps taking turns on one model (first
round discarded as warm-up); the table shows medians in seconds and in sgd steps. The fwd phases
are `reweight.weights_fwd`'s two passes called one at a time (a test checks they give its weights).

A third timed pass splits the forward with its tangent into convolutions and the rest: a plain
forward that also runs, at every convolution, the tangent's two extra convolutions (x with the
weight's tangent dW, and a stand-in for the input's tangent with W; the image has no tangent, so
the first layer runs one) but none of the tangent's elementwise work (BatchNorm, ReLU, adds),
then a backward (timed apart), so that its saved activations are freed as the update frees them.
Swapping it into the fwd step gives the step's cost if that elementwise work were free, e.g.
fused into the primal's kernels: the floor exact forward mode can reach on this machine. That
pass is compiled when the fwd step's forward with tangent is (hardware.compile=true), so both
sides of the split run the same way. Compiled, that pass is sensitive to how glibc returns freed
memory (page faults); the command in docs/performance.md keeps freed memory:
MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=536870912.

Last, the floating-point operations of one eager step of each kind, counted by
torch.utils.flop_counter (convolutions and matrix products, forward and backward): the work a step
must do whatever its kernels' speed. An exact fwd step is a meta forward+backward (an sgd step's
work at equal batches), a forward whose convolutions run three times (primal, W with the input's
tangent, the weight's tangent dW with x; torch's JVP runs the second at the image too, on zeros)
and a backward: 2 + 2 x (forward / sgd step), about 2.67 when a backward costs two forwards.
With hardware.amp set, it also compares one step's weights with float32 ones.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from l2rw import reweight
from l2rw.run.bench import Run, image_shape, machine, run_overrides, synchronize
from l2rw.run.hardware import AMP_DTYPES
from l2rw.training.evaluation import PixelStandardizer

SGD_PHASES = ["forward", "backward", "optimizer step"]
FWD_PHASES = ["meta forward+backward", "forward with tangent", "update backward", "optimizer step"]
SPLIT_PHASES = ["forward + tangent convolutions only", "backward"]


class StepPhases:
    """The sgd step and the l2rw fwd step on one model, one phase per callable."""

    def __init__(self, args: argparse.Namespace):
        overrides = run_overrides(args.model, args.hardware, args.batch, args.overrides)
        run = Run.on_random_data(overrides, image_shape(args.model), args.batch, args.meta_batch)  # the training set is one batch
        self.device, self.model, self.optimizer = run.device, run.model, run.optimizer
        standardize = PixelStandardizer.of(run.splits.train.images)
        self.x, self.y = standardize(run.splits.train.images), run.splits.train.labels
        self.meta_x, self.meta_y = standardize(run.splits.meta.images), run.splits.meta.labels
        self.network = reweight.eager(self.model)
        self.lr = run.cfg.lr
        self.amp = AMP_DTYPES[run.cfg.hardware.amp]

    def sgd(self) -> list[Callable[[], None]]:
        state = {}

        def forward():
            with self.autocast():
                state["loss"] = F.cross_entropy(self.model(self.x), self.y)

        def backward():
            self.optimizer.zero_grad(set_to_none=True)
            state["loss"].backward()

        return [forward, backward, self.optimizer.step]

    def l2rw_fwd(self) -> list[Callable[[], None]]:
        self.fwd_state = {}  # what one phase hands the next: direction, losses, weights

        # reweight.fwd_functions picks compiled or eager passes by hardware.compile and autocast,
        # so it is asked inside the autocast region, as weights_fwd asks it
        def meta_forward_backward():
            with self.autocast():
                network, meta_loss, _ = reweight.fwd_functions(self.model)
                self.fwd_state["direction"] = reweight.meta_gradient(network, self.meta_x, self.meta_y, meta_loss)

        def forward_with_tangent():
            with self.autocast():
                network, _, dual = reweight.fwd_functions(self.model)
                self.fwd_state["losses"], alignment = dual(network, self.x, self.y, self.fwd_state["direction"])
            self.fwd_state["weights"] = reweight.normalize(self.lr * alignment)

        def update_backward():
            self.optimizer.zero_grad(set_to_none=True)
            (self.fwd_state["weights"] * self.fwd_state["losses"]).sum().backward()

        return [meta_forward_backward, forward_with_tangent, update_backward, self.optimizer.step]

    def seconds(self, phases: list[Callable[[], None]]) -> list[float]:
        spent = []
        for phase in phases:
            synchronize(self.device)
            started = time.perf_counter()
            phase()
            synchronize(self.device)
            spent.append(time.perf_counter() - started)
        return spent

    def forward_with_tangent_convolutions(self) -> list[Callable[[], None]]:
        """A plain forward that also runs, at each convolution, the convolutions of its tangent,
        compiled exactly when the fwd step's forward with tangent is; then a backward, so that its
        saved activations are freed as the update frees the real ones."""
        direction = reweight.meta_gradient(self.network, self.meta_x, self.meta_y)
        convolutions = [m for m in self.network.modules() if isinstance(m, nn.Conv2d)]
        weight_tangent = {id(p): direction[name] for name, p in reweight.trainable_parameters(self.network).items()}
        # one element of each, kept until the pass ends: a compiled graph drops work whose result
        # nothing holds, and holding whole outputs would make the pass allocate what the real one reuses
        tangent_samples: list[torch.Tensor] = []

        @torch.no_grad()
        def tangent_convolutions(module, inputs, output):
            x = inputs[0]
            results = [module._conv_forward(x, weight_tangent[id(module.weight)], None)]
            if x.requires_grad:  # an activation, which carries a tangent (the image does not)
                results.append(module._conv_forward(x, module.weight, None))
            tangent_samples.extend(result[:1, :1, :1, :1].clone() for result in results)

        def plain_losses(x, y):
            return F.cross_entropy(self.network(x), y, reduction="none")

        with self.autocast():
            _, _, dual = reweight.fwd_functions(self.model)
        run = plain_losses if dual is reweight.losses_along else torch.compile(plain_losses, fullgraph=True)

        state = {}

        def forward():
            hooks = [m.register_forward_hook(tangent_convolutions) for m in convolutions]
            try:
                with self.autocast():
                    state["losses"] = run(self.x, self.y)
            finally:
                for hook in hooks:
                    hook.remove()
                tangent_samples.clear()  # empty at each call, as when the graph was compiled

        def backward():
            self.optimizer.zero_grad(set_to_none=True)
            state.pop("losses").mean().backward()

        return [forward, backward]

    def autocast(self):
        """As `fit` runs forward passes: in `hardware.amp`'s dtype when it is set."""
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)


def profile_steps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{"sgd" | "l2rw fwd" | "split": {phase: median seconds}}."""
    steps = StepPhases(args)
    kinds = {
        "sgd": (SGD_PHASES, steps.sgd()),
        "l2rw fwd": (FWD_PHASES, steps.l2rw_fwd()),
        "split": (SPLIT_PHASES, steps.forward_with_tangent_convolutions()),
    }
    rounds: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    for round_number in range(args.repeats + 1):
        for kind, (_, phases) in kinds.items():
            spent = steps.seconds(phases)
            if round_number > 0:  # round 0 warms up allocators and kernels
                rounds[kind].append(spent)
    return {
        kind: {name: statistics.median(column) for name, column in zip(names, zip(*rounds[kind]))}
        for kind, (names, _) in kinds.items()
    }


def step_flops(steps: StepPhases) -> dict[str, int]:
    """Floating-point operations of one eager step: sgd (and its forward alone), l2rw fwd and
    l2rw double_backprop, on the same batches."""
    network = steps.network

    def counted(run: Callable[[], object]) -> int:
        with FlopCounterMode(display=False) as counter:
            run()
        network.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def sgd_loss() -> torch.Tensor:
        return F.cross_entropy(network(steps.x), steps.y)

    def l2rw_step(impl: str) -> None:
        weights, losses = reweight.IMPLEMENTATIONS[impl](network, steps.x, steps.y, steps.meta_x, steps.meta_y, steps.lr)
        (weights * losses).sum().backward()

    return {
        "sgd forward": counted(sgd_loss),
        "sgd step": counted(lambda: sgd_loss().backward()),
        "l2rw fwd step": counted(lambda: l2rw_step("fwd")),
        "l2rw double_backprop step": counted(lambda: l2rw_step("double_backprop")),
    }


def weights_against_float32(steps: StepPhases) -> dict[str, float]:
    """One fwd step's weights as configured (hardware.amp, hardware.compile) against float32 eager
    ones on a copy of the same model and batches: how far mixed precision moves them."""
    exact = reweight.weights_fwd(copy.deepcopy(steps.network), steps.x, steps.y, steps.meta_x, steps.meta_y, steps.lr)
    with steps.autocast():
        got = reweight.weights_fwd(steps.model, steps.x, steps.y, steps.meta_x, steps.meta_y, steps.lr)
    return {
        "largest float32 weight": exact.weights.max().item(),
        "largest difference": (got.weights - exact.weights).abs().max().item(),
        "share of examples weighted zero in one and not the other": ((got.weights > 0) != (exact.weights > 0)).float().mean().item(),
    }


def split_ratios(result: dict[str, dict[str, float]]) -> dict[str, float]:
    """What the split pass says about the forward with its tangent, in this run's own plain
    forwards or sgd steps (the table already gives each phase in sgd steps)."""
    sgd_step = sum(result["sgd"].values())
    fwd_step = sum(result["l2rw fwd"].values())
    plain_forward = result["sgd"]["forward"]
    tangent_forward = result["l2rw fwd"]["forward with tangent"]
    convolutions_only = result["split"]["forward + tangent convolutions only"]
    return {
        "forward with tangent, x plain forward": tangent_forward / plain_forward,
        "forward + tangent convolutions only, x plain forward": convolutions_only / plain_forward,
        "tangent's elementwise work, x sgd step": (tangent_forward - convolutions_only) / sgd_step,
        "l2rw fwd step with that work free (the floor), x sgd step": (fwd_step - tangent_forward + convolutions_only) / sgd_step,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--meta-batch", type=int, default=100)
    parser.add_argument("--hardware", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--overrides", nargs="*", default=[], help="more config overrides, e.g. hardware.channels_last=false")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    result = profile_steps(args)
    sgd_step = sum(result["sgd"].values())
    print(f"{machine()}; {args.model}, batch {args.batch}, meta batch {args.meta_batch}; median of {args.repeats} rounds")
    print("| step | phase | s | x sgd step |")
    print("|---|---|---|---|")
    for kind, phases in result.items():
        for phase, seconds in phases.items():
            print(f"| {kind} | {phase} | {seconds:.4f} | {seconds / sgd_step:.2f} |")
        if kind != "split":
            total = sum(phases.values())
            print(f"| {kind} | **step** | {total:.4f} | {total / sgd_step:.2f} |")
    for name, value in split_ratios(result).items():
        print(f"{name}: {value:.2f}")
    steps = StepPhases(args)  # a fresh model: the timed rounds have trained the other one
    if steps.amp is not None:
        print("weights against float32: " + ", ".join(f"{k} {v:.2g}" for k, v in weights_against_float32(steps).items()))
    flops = step_flops(steps)
    print("FLOPs per step (eager): " + ", ".join(
        f"{kind} {count / 1e9:.2f} G ({count / flops['sgd step']:.2f}x sgd step)" for kind, count in flops.items()
    ))


if __name__ == "__main__":
    main()
