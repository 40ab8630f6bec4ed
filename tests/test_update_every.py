"""method.update_every: weights computed every k-th step, remembered per example, reused between."""
import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.config_schema import check_config
from l2rw.data import LabeledImages
from l2rw.errors import UserError
from l2rw.instantiation import build

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


@pytest.mark.parametrize("k", [0, 1.5])
def test_update_every_must_be_a_positive_whole_number(make_cfg, k):
    with pytest.raises(UserError, match=r"method\.update_every"):
        check_config(make_cfg("method=l2rw", f"method.update_every={k}"))


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
