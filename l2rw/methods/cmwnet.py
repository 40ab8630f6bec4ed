"""CMW-Net (Shu et al., TPAMI 2023): Meta-Weight-Net whose weight net also sees the class group of
each example's label, the classes sorted into a few groups by their training-set sizes.

V(l, k) = sigmoid(head_k(relu(Linear(1, hidden)(l)))): one shared layer, one output head per
group k (github.com/xjtushujun/CMW-Net, section4/Class_Imbalance/resnet.py 294-332; built as
VNet(1, 100, 100, 1, 3)). The groups: k-means with 3 clusters on the per-class image counts of the
training set as the model sees it (LT1.py 115-124; cmwn.py 309-320: noisy labels' counts); here
numbered from the smallest classes up (the released ids are k-means' arbitrary ones). The meta
step is Meta-Weight-Net's (`l2rw.methods.mwnet`): its forward-mode meta gradient and the
double-backprop reference, on V bound to the batch's groups. Two released settings, `variant`:
- `imbalance` (section4/Class_Imbalance/LT1.py): V sees the detached loss (276); weights divided
  by their detached sum, no guard (278; here all zeros stay zeros and the step is skipped); a meta
  update every step; plain training until epoch 160 of 200, the first lr drop (170-171); V trained
  by Adam, lr 1e-4, weight decay 1e-5, amsgrad (160).
- `noise` (section4/Feature-independent_Label_Noise/cmwn.py): detached loss (136); weights V/n
  (the .mean() of 142); a meta update every 10 batches of each epoch (129); plain training for
  the first 10 of 300 epochs (286-290; 30 on CIFAR-100); Adam, lr 1e-4, weight decay 1e-4 (340).
Named deviations: the meta set is the run's clean, held-out one (LT1.py rebuilds a balanced subset
of the imbalanced training set each epoch; cmwn.py picks the 10 lowest-loss examples per class with
their noisy labels); cmwn.py's label correction, mixup and EMA teacher make it CMW-Net-SL, another
method, and are not here; LT1.py's head lookup through argmax (resnet.py 329) of integer labels
is taken as the head of the label's group, as the noise script's copy (PreResNet_MWN.py 433) does.
"""
from functools import partial
from typing import NamedTuple

import torch
from sklearn.cluster import KMeans
from torch import nn

from l2rw.data import LabeledImages
from l2rw.losses import cross_entropy
from l2rw.methods.base import META_BATCH_SIZE, MetaMethod, StepLoss, deferred_steps, own_random_stream, step_count
from l2rw.methods.mwnet import IMPLEMENTATIONS, Variant, batch_weights, load_weight_net, over_batch_size, weight_net_state
from l2rw.run.options import choice, either, number, optional, whole


def over_detached_sum(raw: torch.Tensor) -> torch.Tensor:
    """raw / sum(raw), the sum a constant to autograd (LT1.py 278); all zeros stay zeros."""
    total = raw.sum().detach()
    return raw / torch.where(total > 0, total, torch.ones_like(total))


class Setting(NamedTuple):
    variant: Variant  # V's input, normalisation and optimizer
    meta_every: int   # steps between meta updates
    defer: float | str  # what `defer=null` means: the share of the run trained unweighted, or `first_lr_drop`


SETTINGS = {
    "imbalance": Setting(Variant(over_detached_sum, False, partial(torch.optim.Adam, weight_decay=1e-5, amsgrad=True), 1e-4),
                         1, "first_lr_drop"),
    "noise": Setting(Variant(over_batch_size, False, partial(torch.optim.Adam, weight_decay=1e-4), 1e-4), 10, 10 / 300),
}


class ClassAwareWeightNet(nn.Module):
    """(loss, class group) -> weight in (0, 1): Linear(1, hidden) and ReLU shared, then the group's
    own Linear(hidden, 1) and sigmoid."""

    def __init__(self, groups: int = 3, hidden: int = 100):
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(1, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(groups))

    def forward(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        features = self.shared(losses[:, None])
        every_head = torch.cat([head(features) for head in self.heads], dim=1)
        return torch.sigmoid(every_head.gather(1, groups[:, None]).squeeze(1))


class OnGroups(nn.Module):
    """V with the batch's class groups bound: losses -> weights, as Meta-Weight-Net's meta step calls
    its weight net; its parameters are V's."""

    def __init__(self, weight_net: ClassAwareWeightNet, groups: torch.Tensor):
        super().__init__()
        self.weight_net = weight_net
        self.groups = groups

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.weight_net(losses, self.groups)


def class_groups(class_counts: torch.Tensor, groups: int) -> torch.Tensor:
    """Each class's group: k-means on the class sizes (fewer groups when there are fewer distinct
    sizes), numbered by size, 0 holding the smallest classes."""
    sizes = class_counts.double().cpu().numpy()[:, None]
    clusters = min(groups, len(set(sizes[:, 0])))
    labels = KMeans(n_clusters=clusters, n_init=10, random_state=0).fit(sizes).labels_
    order = sorted(range(clusters), key=lambda k: sizes[labels == k].mean())
    return torch.tensor([order.index(k) for k in labels], dtype=torch.long)


class ClassAwareMetaWeightNet(MetaMethod):
    """Meta-Weight-Net whose weight net also sees each example's class group (the module's docstring
    has the weight net, the groups and the released settings)."""

    implementations = tuple(IMPLEMENTATIONS)
    full_step_overrides = ("method.defer=0", "method.meta_every=1")

    def __init__(
        self,
        meta_batch_size: META_BATCH_SIZE,
        variant: choice(*SETTINGS, doc="which released script's weights, meta-update frequency, plain start and weight-net "
                                       "optimizer: `imbalance`: LT1.py; `noise`: cmwn.py without its label correction. "
                                       "The default follows `noise.kind`: `noise` under label noise, else `imbalance`"),
        meta_lr: optional(number(gt=0, le=1, note=" (the weight net's Adam lr)"), "for the released 1e-4",
                          doc="the step size of the weight net's Adam") = None,
        groups: whole(1, 100, note=" (Shu et al. use 3)", doc="the class groups k-means sorts the classes into by size, "
                                                              "each with its own output head") = 3,
        hidden: whole(1, note=" (Shu et al. use 100)", doc="the shared layer's units") = 100,
        meta_every: optional(whole(1), "for the variant's released one: 1 for imbalance, 10 for noise",
                             doc="steps between the weight net's meta updates; the steps between weigh with it as it is") = None,
        defer: optional(either(number(ge=0, lt=1, note=" (the fraction of steps trained unweighted first)"),
                               choice("first_lr_drop")),
                        "for the variant's released one: first_lr_drop for imbalance, 10/300 of the steps for noise",
                        doc="how long the run trains unweighted before the weight net weighs (a schedule without drops, "
                            "e.g. cosine, switches at 80% for `first_lr_drop`)") = None,
        impl: choice(*IMPLEMENTATIONS, doc="how the weight net's meta gradient is computed: `fwd`: one forward-mode pass "
                                           "along the meta gradient; `double_backprop`: the released graph, the reference") = "fwd",
    ):
        setting = SETTINGS[variant]
        self.meta_batch_size = meta_batch_size
        self.variant = variant
        self.meta_lr = setting.variant.meta_lr if meta_lr is None else meta_lr
        self.groups = groups
        self.hidden = hidden
        self.meta_every = setting.meta_every if meta_every is None else meta_every
        self.defer = setting.defer if defer is None else defer
        self.impl = impl

    def setup(self, train: LabeledImages, meta: LabeledImages, num_classes: int, generator: torch.Generator, **run):
        super().setup(train, meta, num_classes, generator, **run)
        device = train.labels.device
        self.group_of_class = class_groups(torch.bincount(train.labels.cpu(), minlength=num_classes), self.groups).to(device)
        with own_random_stream(generator):
            self.weight_net = ClassAwareWeightNet(self.groups, self.hidden).to(device)
        self.optimizer = SETTINGS[self.variant].variant.optimizer(self.weight_net.parameters(), lr=self.meta_lr)
        self.unweighted_steps = deferred_steps(self.defer, self.run_steps, self.first_lr_drop)
        self.steps_taken = 0

    def state_dict(self) -> dict:
        return super().state_dict() | {"steps_taken": self.steps_taken} | weight_net_state(self.weight_net, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        steps_taken = step_count(state)
        load_weight_net(state, self.weight_net, self.optimizer,
                        f"Linear(1, {self.hidden}) and ReLU with {self.groups} heads Linear({self.hidden}, 1)")
        self.steps_taken = steps_taken

    def step_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float
    ) -> StepLoss:
        self.steps_taken += 1
        if self.steps_taken <= self.unweighted_steps:
            return super().step_loss(model, x, y, index, lr)
        variant, groups = SETTINGS[self.variant].variant, self.group_of_class[y]
        weight_net = OnGroups(self.weight_net, groups)
        # cmwn.py's `batch_idx % 10 == 0`: counted within each epoch, from its first batch
        batch_in_epoch = (self.steps_taken - 1) % max(self.num_train // len(y), 1)
        if batch_in_epoch % self.meta_every == 0:
            meta_x, meta_y = self.meta_batch()
            gradient, losses = IMPLEMENTATIONS[self.impl](
                model, weight_net, x, y, meta_x, meta_y, lr, variant, loss_fn=self.loss_fn, meta_loss_fn=cross_entropy
            )
            self.update_weight_net(gradient, groups)
        else:
            losses = self.loss_fn(model(x), y)
        with torch.no_grad():
            weights = batch_weights(weight_net, losses, variant)
        return StepLoss((weights * losses).sum(), weights)

    def update_weight_net(self, gradient: list[torch.Tensor], groups: torch.Tensor) -> None:
        """One optimizer step of V. A head whose groups are absent from the batch is out of the
        released per-example lookup's graph: under the PyTorch 1.x the scripts ran on, zero_grad()
        left it a zero gradient once it had one, so Adam's momentum and weight decay still move it,
        and no gradient before its first step, so Adam leaves it alone."""
        for parameter, grad in zip(self.weight_net.parameters(), gradient):
            parameter.grad = grad
        present = set(groups.unique().tolist())
        for group, head in enumerate(self.weight_net.heads):
            if group not in present:
                for parameter in head.parameters():
                    if parameter not in self.optimizer.state:
                        parameter.grad = None
        self.optimizer.step()
