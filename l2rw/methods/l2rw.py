import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.losses import cross_entropy
from l2rw.methods.base import META_BATCH_SIZE, MetaMethod, StepLoss, step_count
from l2rw.run.options import choice, number, whole


class L2RW(MetaMethod):
    """Online meta-reweighting (Ren et al. 2018): each step weighs the batch's examples by how well
    each one's gradient agrees with the gradient of the loss on a clean meta batch
    (`l2rw.reweight`), clipped at 0 and normalised to sum to 1; a step whose weights are all 0 is
    skipped."""

    implementations = tuple(reweight.IMPLEMENTATIONS)

    def __init__(
        self,
        meta_batch_size: META_BATCH_SIZE,
        update_every: whole(1, note=" (1: every step)",
                            doc="compute weights on every k-th step only and remember them per training example (each "
                                "starts uniform); the steps between use the batch's remembered weights, normalised to "
                                "sum to 1") = 1,
        impl: choice(*reweight.IMPLEMENTATIONS,
                     doc="how the weights are computed: `fwd`: one forward-mode pass; `double_backprop`: the "
                         "published look-ahead graph, the reference (the same weights); `last_layer`: the final linear "
                         "layer's gradients only (cheaper, other weights)") = "fwd",
        mix: number(ge=0, le=1, note=" (0: plain L2RW weights)",
                    doc="weights = (1 - mix) * L2RW + mix * uniform, so no step is skipped and no example is ever "
                        "ignored entirely") = 0.0,
        smoothing: number(ge=0, lt=1, note=" (0: each step's own weights)",
                          doc="each example's remembered weight moves only (1 - smoothing) of the way to its new L2RW "
                              "weight: an average over the steps that saw it") = 0.0,
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
        self.steps_taken = step_count(state)

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
