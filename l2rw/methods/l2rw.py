import torch
import torch.nn.functional as F
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.errors import UserError, is_number, is_whole
from l2rw.methods.base import Method, StepLoss


class L2RW(Method):
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
        self, meta_batch_size: int, update_every: int = 1, impl: str = "fwd",
        mix: float = 0.0, smoothing: float = 0.0,
    ):
        if not (is_whole(meta_batch_size) and meta_batch_size >= 1):
            raise UserError(f"method.meta_batch_size={meta_batch_size} must be a whole number >= 1")
        if not (is_whole(update_every) and update_every >= 1):
            raise UserError(f"method.update_every={update_every} must be a whole number >= 1 (1 = every step)")
        if not isinstance(impl, str) or impl not in reweight.IMPLEMENTATIONS:
            raise UserError(f"method.impl={impl!r} is unknown; use one of {', '.join(reweight.IMPLEMENTATIONS)}")
        if not (is_number(mix) and 0.0 <= mix <= 1.0):
            raise UserError(f"method.mix={mix} must be a number in [0, 1] (0: plain L2RW weights)")
        if not (is_number(smoothing) and 0.0 <= smoothing < 1.0):
            raise UserError(f"method.smoothing={smoothing} must be a number in [0, 1) (0: each step's own weights)")
        self.meta_batch_size = meta_batch_size
        self.update_every = update_every
        self.mix = mix
        self.smoothing = smoothing
        # one cycle: steps reusing weights, and one computing them
        self.warmup_steps = update_every
        self.impl = impl

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator):
        super().setup(train, meta, num_classes, generator)
        self.meta = meta  # images already normalised to float by the trainer
        # weight x batch size, so never-computed examples (1 = uniform) share the scale of computed ones
        self.memory = torch.ones(len(train), device=train.labels.device)
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"memory": self.memory.clone(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memory = state["memory"].to(self.memory.device)
        self.steps_taken = state["steps_taken"]

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole meta set when it fits in one meta batch, else a fresh sample."""
        images, labels = self.meta.images, self.meta.labels
        if len(self.meta) > self.meta_batch_size:
            pick = torch.randperm(len(self.meta), generator=self.generator)[: self.meta_batch_size]
            pick = pick.to(labels.device)
            images, labels = images[pick], labels[pick]
        return images, labels

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        self.steps_taken += 1
        if self.steps_taken % self.update_every == 0:
            meta_x, meta_y = self.meta_batch()
            weights, losses = reweight.example_weights(model, x, y, meta_x, meta_y, impl=self.impl)  # the step's real forward
            if self.smoothing:
                self.memory[index] = self.smoothing * self.memory[index] + (1 - self.smoothing) * weights * len(weights)
                weights = reweight.normalize(self.memory[index])
            else:
                self.memory[index] = weights * len(weights)
        else:  # a step between computations: the batch's remembered weights (1 until computed)
            losses = F.cross_entropy(model(x), y, reduction="none")
            weights = reweight.normalize(self.memory[index])
        if self.mix:
            weights = reweight.normalize((1 - self.mix) * weights + self.mix / len(weights))
        return StepLoss((weights * losses).sum(), weights)
