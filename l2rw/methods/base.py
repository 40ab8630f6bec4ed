from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages
from l2rw.errors import UserError
from l2rw.losses import ExampleStateLoss, LossFunction, cross_entropy
from l2rw.run.options import whole
from l2rw.training.network import NewNetwork


@dataclass
class StepLoss:
    loss: torch.Tensor     # scalar to back-propagate: sum_i weights_i * loss_i
    # (batch,): each example's share of the step, 1/batch each for plain SGD; most methods' sum to 1
    # (Meta-Weight-Net's noise variant's and `class_balanced`'s normalize=batch_size: less), all zeros
    # when the step must be skipped
    weights: torch.Tensor


class Method:
    """Plain SGD: uniformly shuffled epochs, every example of a batch weighted 1/batch.

    Other methods override `batches` (which examples a step sees) or `step_loss`
    (how they are weighted). `setup` hands over what only the data and the run know: the
    per-example `loss_fn` every method weighs (`l2rw.losses`), the run's length in `steps`
    (kept as `run_steps`), the step where the lr schedule first drops (`first_lr_drop`, None
    for a schedule without drops), and `new_network`, which builds a model like the run's with its
    optimizer and lr schedule, for a method that trains models of its own (co-teaching: it builds
    them in its `setup`, without keeping `new_network`, whose arguments hold the run's data; it
    updates them in `step_loss`, and their state goes into its `state_dict`, as does a loss's
    per-example state).
    """

    # steps after which every kind of step the method takes has run once (and compiled, with
    # hardware.compile): the trainer keeps each process's first ones out of seconds_per_step
    warmup_steps = 1
    # What the harness reads instead of the method's name (l2rw.methods.catalog):
    uses_meta_set = False           # draws a batch of the clean meta set each step (`meta_batch_size`)
    learns_example_weights = False  # weighs each example on its own: example_weights.csv is worth plotting
    implementations: tuple[str, ...] = ()  # the values of its `impl` option, each a different computation to time
    # overrides that make every step its full one when timed (a plain start or sparse meta updates
    # would otherwise time plain steps)
    full_step_overrides: tuple[str, ...] = ()

    @classmethod
    def keeps_state(cls) -> bool:
        """Whether it keeps state of its own across steps, beyond the batch order, that a resume
        must restore: it extends `state_dict`."""
        return cls.state_dict is not Method.state_dict

    def setup(
        self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator,
        loss_fn: LossFunction = cross_entropy, steps: int = 0, first_lr_drop: int | None = None,
        new_network: NewNetwork | None = None,
    ):
        self.num_train = len(train)
        self.loss_fn = loss_fn
        self.run_steps = steps
        self.first_lr_drop = first_lr_drop
        self.generator = generator
        self.epoch_rest = torch.empty(0, dtype=torch.long)  # this epoch's examples not served yet

    def check_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """Raise UserError, before the run writes anything, when this method cannot train `model`
        on inputs like `inputs` (a couple of standardised training images); plain SGD trains any."""

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Endless index batches over the training set (CPU int64 tensors); an epoch's last
        partial batch is dropped. The position lives in `self`, so `state_dict` captures it."""
        while True:
            if len(self.epoch_rest) < min(batch_size, self.num_train):
                self.epoch_rest = torch.randperm(self.num_train, generator=self.generator)
            batch, self.epoch_rest = self.epoch_rest[:batch_size], self.epoch_rest[batch_size:]
            yield batch

    def state_dict(self) -> dict:
        """What `batches` and `step_loss` need to go on exactly where they stopped (checkpoints).
        Methods that keep more state extend both this and `load_state_dict`."""
        state = {"generator": self.generator.get_state(), "epoch_rest": self.epoch_rest}
        if isinstance(self.loss_fn, ExampleStateLoss):
            state["loss"] = self.loss_fn.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Call after `setup`, before `batches`. Raises ValueError, saying why, for a state that is not
        one this method, set up so, keeps (a crafted or damaged checkpoint's)."""
        ours = self.state_dict()
        if not isinstance(state, dict) or state.keys() != ours.keys():
            raise ValueError(f"its state does not hold {', '.join(ours)}")
        generator, rest = state["generator"], state["epoch_rest"]
        if not (isinstance(generator, torch.Tensor) and generator.dtype == torch.uint8 and generator.shape == ours["generator"].shape):
            raise ValueError("its generator state is not a torch generator's")
        if not (isinstance(rest, torch.Tensor) and rest.dtype == torch.int64 and rest.dim() == 1
                and len(rest) <= self.num_train and bool(((rest >= 0) & (rest < self.num_train)).all())):
            raise ValueError(f"its place in the epoch is not a list of training image indices below {self.num_train}")
        if "loss" in state:
            self.loss_fn.load_state_dict(state["loss"])
        self.generator.set_state(generator)
        self.epoch_rest = rest

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        """`index`: positions of the batch in the training set; `lr`: the optimizer's current rate."""
        losses = self.loss_fn(model(x), y)
        weights = torch.full_like(losses, 1.0 / len(losses)).detach()
        return StepLoss((weights * losses).sum(), weights)


@contextmanager
def own_random_stream(generator: torch.Generator) -> Iterator[None]:
    """torch's global random stream seeded from the method's `generator` and restored afterwards:
    what a method builds for itself (a weight net, a second network) must not shift the random
    stream the run's model and data draw from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        yield


def step_count(state: dict) -> int:
    """The saved `steps_taken` of a method that counts its steps; ValueError when it is no count."""
    steps_taken = state["steps_taken"]
    if not (type(steps_taken) is int and steps_taken >= 0):
        raise ValueError(f"its steps_taken {steps_taken!r} is not a count of steps")
    return steps_taken


# Where Cao et al. switch the class weights on when the schedule has no lr drop to tie them to:
# epoch 160 of their 200, the share of the run their first lr drop ends
DRW_SHARE = 0.8


def deferred_steps(defer: float | str, run_steps: int, first_lr_drop: int | None) -> int:
    """The steps a method with a `defer` option trains unweighted first: a share of the run's, or
    until the lr schedule's first drop (`first_lr_drop`; without one, DRW_SHARE of the run)."""
    if defer != "first_lr_drop":
        return int(defer * run_steps)
    return first_lr_drop if first_lr_drop is not None else int(DRW_SHARE * run_steps)


# Every method that draws meta batches takes this option
META_BATCH_SIZE = whole(1, doc="the meta batch of each step: the whole meta set when it fits, else a fresh sample of "
                               "this size")


class MetaMethod(Method):
    """A method that learns from the clean meta set each step (L2RW, Meta-Weight-Net): it keeps the
    meta images the trainer hands over (normalised to float) and draws a meta batch per step."""

    uses_meta_set = True
    learns_example_weights = True
    meta_batch_size: int

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        self.meta = meta

    def check_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """`impl=fwd` runs a forward-mode pass through the model each step: an op without a
        forward-mode rule is refused in one line, with the computations that do not need one."""
        if getattr(self, "impl", None) == "fwd" and (op := reweight.op_without_forward_rule(model, inputs)):
            others = [impl for impl in self.implementations if impl != "fwd"]
            raise UserError(f"method.impl=fwd needs a forward-mode rule for every op of the model, and torch has none for "
                            f"{op}; use method.impl={' or method.impl='.join(others)}")

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole meta set when it fits in one meta batch, else a fresh sample of that size."""
        images, labels = self.meta.images, self.meta.labels
        if len(self.meta) > self.meta_batch_size:
            pick = torch.randperm(len(self.meta), generator=self.generator)[: self.meta_batch_size].to(labels.device)
            images, labels = images[pick], labels[pick]
        return images, labels
