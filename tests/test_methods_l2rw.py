"""method=l2rw (l2rw.methods.l2rw): one trainer step of each implementation, `update_every`
(weights computed every k-th step, remembered per example, reused between) and the remedies (each
reduces to plain L2RW at its neutral setting, and does what it says otherwise)."""
import copy

import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.data import LabeledImages, build_splits
from l2rw.losses import cross_entropy
from l2rw.models import build_model
from l2rw.run.instantiation import build
from l2rw.training.loop import FitOptions, fit
from tests.helpers.configs import config_options

LR = 0.1


def setup_l2rw(make_cfg, k: int):
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.arange(12) % 3
    meta = LabeledImages(torch.randn(6, 5), torch.arange(6) % 3)
    method = build(make_cfg("method=l2rw", f"method.update_every={k}").method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0))
    return method, nn.Linear(5, 3), x, y, meta


def fresh(model, x, y, meta):
    return reweight.weights_double_backprop(model, x, y, meta.images, meta.labels, LR).weights


def perturb(model: nn.Module) -> None:
    """A new model each step, so a recomputation could not return the remembered weights by chance."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))


def test_k3_reuses_the_stored_weights_on_the_two_steps_after_a_compute(make_cfg):
    method, model, x, y, meta = setup_l2rw(make_cfg, k=3)
    first = torch.arange(6)

    def step(index):
        perturb(model)
        return method.step_loss(model, x[index], y[index], index, LR).weights

    uniform = torch.full((6,), 1 / 6)
    torch.testing.assert_close(step(first), uniform)  # step 1: memory starts uniform
    torch.testing.assert_close(step(first), uniform)  # step 2
    computed = step(first)                            # step 3: computed and stored
    torch.testing.assert_close(computed, fresh(model, x[first], y[first], meta))
    assert not torch.allclose(computed, uniform)
    torch.testing.assert_close(step(first), computed, rtol=1e-6, atol=0)  # step 4: reused
    torch.testing.assert_close(step(first), computed, rtol=1e-6, atol=0)  # step 5: reused
    recomputed = step(first)                                                 # step 6: computed again
    torch.testing.assert_close(recomputed, fresh(model, x[first], y[first], meta))
    assert not torch.allclose(recomputed, computed)


def test_reuse_mixes_remembered_and_never_computed_examples_normalised(make_cfg):
    method, model, x, y, meta = setup_l2rw(make_cfg, k=2)
    first, mixed = torch.arange(6), torch.arange(3, 9)
    method.step_loss(model, x[first], y[first], first, LR)            # step 1: reuse (uniform)
    computed = method.step_loss(model, x[first], y[first], first, LR).weights  # step 2: compute
    reused = method.step_loss(model, x[mixed], y[mixed], mixed, LR).weights    # step 3: reuse
    # examples 3..5 keep their computed weight x 6; examples 6..8 were never computed: 1 each
    remembered = torch.cat([computed[3:] * 6, torch.ones(3)])
    torch.testing.assert_close(reused, remembered / remembered.sum())


def test_k1_computes_every_step(make_cfg):
    method, model, x, y, meta = setup_l2rw(make_cfg, k=1)
    index = torch.arange(12)
    for _ in range(2):
        perturb(model)
        weights = method.step_loss(model, x, y, index, LR).weights
        torch.testing.assert_close(weights, fresh(model, x, y, meta))


def test_weight_memory_and_step_count_survive_a_checkpoint(make_cfg):
    method, model, x, y, meta = setup_l2rw(make_cfg, k=3)
    first = torch.arange(6)
    for _ in range(3):  # step 3 computes and stores non-uniform weights
        method.step_loss(model, x[first], y[first], first, LR)
    restored, *_ = setup_l2rw(make_cfg, k=3)
    restored.load_state_dict(method.state_dict())
    perturb(model)
    # step 4 reuses the stored weights in both; a restore without the memory would give uniform ones
    expected = method.step_loss(model, x[first], y[first], first, LR).weights
    assert not torch.allclose(expected, torch.full((6,), 1 / 6))
    torch.testing.assert_close(restored.step_loss(model, x[first], y[first], first, LR).weights, expected)


def test_warmup_covers_one_cycle_of_reused_and_computed_weights(make_cfg):
    """The trainer times steady steps only after each kind of step ran (and compiled) once."""
    assert build(make_cfg("method=l2rw", "method.update_every=3").method).warmup_steps == 3
    assert build(make_cfg("method=sgd").method).warmup_steps == 1


# --- remedies ----------------------------------------------------------------------------------

NEUTRAL = {"mix": 0.0, "smoothing": 0.0}


def setup_remedy(make_cfg, **options):
    torch.manual_seed(0)
    x, y = torch.randn(12, 1, 4, 4), torch.arange(12) % 3
    meta = LabeledImages(torch.randn(6, 1, 4, 4), torch.arange(6) % 3)
    method = build(make_cfg("method=l2rw", *(f"method.{k}={v}" for k, v in options.items())).method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    return method, model, x, y, meta


def plain(model, x, y, meta):
    return reweight.weights_fwd(model, x, y, meta.images, meta.labels, LR).weights


@pytest.mark.parametrize("option", sorted(NEUTRAL))
def test_each_remedy_at_its_neutral_setting_gives_plain_l2rw_weights(make_cfg, option):
    method, model, x, y, meta = setup_remedy(make_cfg, **{option: NEUTRAL[option]})
    index = torch.arange(12)
    for _ in range(3):
        perturb(model)
        torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, plain(model, x, y, meta))


def test_mix_blends_with_uniform_and_never_skips(make_cfg):
    method, model, x, y, meta = setup_remedy(make_cfg, mix=0.25)
    index = torch.arange(12)
    expected = 0.75 * plain(model, x, y, meta) + 0.25 / 12
    weights = method.step_loss(model, x, y, index, LR).weights
    torch.testing.assert_close(weights, expected)
    assert (weights > 0).all()


def test_smoothing_averages_each_examples_weights_over_steps(make_cfg):
    """Each example's remembered weight (x batch size, 1 before any step) moves 1 - smoothing of
    the way to its new L2RW weight; the step uses the batch's remembered weights, summing to 1."""
    method, model, x, y, meta = setup_remedy(make_cfg, smoothing=0.25)
    index = torch.arange(12)
    first = plain(model, x, y, meta)
    assert (first == 0).any()  # an example plain L2RW ignores keeps a quarter of its earlier weight
    memory = [0.25 * 1 + 0.75 * 12 * w for w in first.tolist()]
    expected = torch.tensor([m / sum(memory) for m in memory])
    torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, expected)
    perturb(model)
    second = plain(model, x, y, meta)
    memory = [0.25 * m + 0.75 * 12 * w for m, w in zip(memory, second.tolist())]
    expected = torch.tensor([m / sum(memory) for m in memory])
    torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, expected)


# --- the meta loss under another training loss ------------------------------------------------

# elr's loss reads its training examples' targets, so it cannot score a meta batch
TRAINING_LOSSES = [name for name in config_options("loss") if name not in ("ce", "elr")]


def reference_weights(model: nn.Module, x, y, meta: LabeledImages, training_loss, meta_loss) -> torch.Tensor:
    """Ren et al.'s weights written out one example at a time, independent of l2rw.reweight:
    relu(grad mean meta loss . grad training loss of example i), normalised to sum 1."""
    parameters = list(model.parameters())

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters)])

    meta_gradient = gradient(meta_loss(model(meta.images), meta.labels).mean())
    raw = torch.stack([meta_gradient @ gradient(training_loss(model(x[i:i + 1]), y[i:i + 1]).sum()) for i in range(len(y))])
    positive = raw.clamp(min=0)
    return positive / positive.sum()


@pytest.mark.parametrize("impl", sorted(reweight.IMPLEMENTATIONS))
@pytest.mark.parametrize("loss", TRAINING_LOSSES)
def test_the_meta_loss_stays_cross_entropy_whatever_the_training_loss(make_cfg, loss, impl):
    """The meta set stands in for the test set, which is scored by plain cross-entropy: a training
    loss's margins, class shifts or down-weighting must not reach the meta gradient."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.tensor([0] * 7 + [1] * 3 + [2] * 2)  # imbalanced: class-aware losses differ from CE
    meta = LabeledImages(torch.randn(6, 5), torch.arange(6) % 3)
    cfg = make_cfg("method=l2rw", f"method.impl={impl}", f"loss={loss}")
    training_loss = build(cfg.loss, class_counts=torch.bincount(y, minlength=3))
    method = build(cfg.method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0), loss_fn=training_loss)
    model = nn.Sequential(nn.Linear(5, 3))  # every parameter in the last layer: all implementations are exact

    step = method.step_loss(model, x, y, torch.arange(12), LR)

    expected = reference_weights(model, x, y, meta, training_loss, cross_entropy)
    with_training_meta_loss = reference_weights(model, x, y, meta, training_loss, training_loss)
    assert (expected - with_training_meta_loss).abs().max() > 1e-3  # the two meta losses are told apart here
    torch.testing.assert_close(step.weights, expected)
    torch.testing.assert_close(step.loss, (step.weights * training_loss(model(x), y)).sum())  # the update is on the training loss


# --- a trainer step ----------------------------------------------------------------------------

def one_trainer_step(make_cfg, tmp_path, *method: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ResNet-32's state before and after one step of `fit` with the `method` overrides."""
    cfg = make_cfg("model=resnet32", *method, "batch_size=16")
    splits = build_splits(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    outcome = fit(
        model, build(cfg.method), splits, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        FitOptions(steps=1, batch_size=cfg.batch_size, eval_every=1, seed=cfg.seed, progress=False),
        metrics_csv=tmp_path / f"{'_'.join(method)}.csv",
    )
    assert outcome.skipped_steps == 0
    return initial, model.state_dict()


@pytest.mark.slow
def test_one_l2rw_trainer_step_gives_the_reference_parameters_and_running_stats(make_cfg, tmp_path):
    initial, fwd = one_trainer_step(make_cfg, tmp_path, "method=l2rw", "method.impl=fwd")
    _, reference = one_trainer_step(make_cfg, tmp_path, "method=l2rw", "method.impl=double_backprop")
    assert not torch.equal(fwd["stem.0.weight"], initial["stem.0.weight"])  # a step was taken
    assert fwd.keys() == reference.keys()
    for name in fwd:
        torch.testing.assert_close(fwd[name], reference[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("impl", sorted(reweight.IMPLEMENTATIONS))
def test_one_l2rw_trainer_step_moves_batchnorm_statistics_exactly_like_one_sgd_step(make_cfg, tmp_path, impl):
    initial, sgd = one_trainer_step(make_cfg, tmp_path, "method=sgd")
    _, l2rw = one_trainer_step(make_cfg, tmp_path, "method=l2rw", f"method.impl={impl}")
    statistics = [name for name in sgd if "running" in name or "num_batches_tracked" in name]
    assert len(statistics) == 31 * 3  # ResNet-32's 31 BatchNorm layers
    for name in statistics:
        assert torch.equal(l2rw[name], sgd[name]), name
        if name.endswith("num_batches_tracked"):
            assert l2rw[name].item() == 1, name  # updated once per step, by the real forward only
        else:
            assert not torch.equal(l2rw[name], initial[name]), name
