import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.losses import cross_entropy
from l2rw.methods.base import MetaMethod, StepLoss
from l2rw.run.options import choice, number, whole


class L2RW(MetaMethod):
    """Online meta-reweighting: each step's example weights come from `l2rw.reweight`.

    `impl` picks how they are computed: "fwd", one forward-mode pass, and "double_backprop", the
    published look-ahead graph kept as the reference, give the same weights; "last_layer" uses the
    final linear layer's gradients only (cheaper, other weights).
    With `update_every=k` the weights are computed only on every k-th step and remembered per
    training example; the steps in between reuse the batch's remembered weights (k=1: plain L2RW).

    Remedies, each off at its default (then the weights are plain L2RW's):
    - `mix`: weights (1 - mix) * L2RW + mix * uniform, so no step is skipped and no example is
      ever ignored entirely;
    - `smoothing`: each example's remembered weight moves only (1 - smoothing) of the way to its
      new L2RW weight, an average over the steps that saw it.
    """

    def __init__(
        self,
        meta_batch_size: whole(1),
        update_every: whole(1, note=" (1: every step)") = 1,
        impl: choice(*reweight.IMPLEMENTATIONS) = "fwd",
        mix: number(ge=0, le=1, note=" (0: plain L2RW weights)") = 0.0,
        smoothing: number(ge=0, lt=1, note=" (0: each step's own weights)") = 0.0,
    ):
        self.meta_batch_size = meta_batch_size
        self.update_every = update_every
        self.mix = mix
        self.smoothing = smoothing
        # one cycle: steps reusing weights, and one computing them
        self.warmup_steps = update_every
        self.impl = impl

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        # weight x batch size, so never-computed examples (1 = uniform) share the scale of computed ones
        self.memory = torch.ones(len(train), device=train.labels.device)
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"memory": self.memory.clone(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        memory = state["memory"]
        if not (isinstance(memory, torch.Tensor) and memory.shape == self.memory.shape and memory.is_floating_point()):
            raise ValueError(f"its smoothed weights are not {len(self.memory)} numbers, one per training image")
        self.memory = memory.to(self.memory.device)
        self.steps_taken = state["steps_taken"]

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        self.steps_taken += 1
        if self.steps_taken % self.update_every == 0:
            meta_x, meta_y = self.meta_batch()
            # the step's real forward; the meta loss is cross-entropy whatever the training loss: it
            # scores the clean, balanced meta set as the test scores the test set
            weights, losses = reweight.IMPLEMENTATIONS[self.impl](
                model, x, y, meta_x, meta_y, loss_fn=self.loss_fn, meta_loss_fn=cross_entropy
            )
            if self.smoothing:
                self.memory[index] = self.smoothing * self.memory[index] + (1 - self.smoothing) * weights * len(weights)
                weights = reweight.normalize(self.memory[index])
            else:
                self.memory[index] = weights * len(weights)
        else:  # a step between computations: the batch's remembered weights (1 until computed)
            losses = self.loss_fn(model(x), y)
            weights = reweight.normalize(self.memory[index])
        if self.mix:
            weights = reweight.normalize((1 - self.mix) * weights + self.mix / len(weights))
        return StepLoss((weights * losses).sum(), weights)
