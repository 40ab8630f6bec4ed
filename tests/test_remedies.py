"""L2RW's remedies: each reduces to plain L2RW at its neutral setting, and does what it says otherwise."""
import pandas as pd
import pytest
import torch
from torch import nn

from l2rw import reweight
from l2rw.config_schema import check_config
from l2rw.data import LabeledImages
from l2rw.errors import UserError
from l2rw.instantiation import build
from l2rw.train import train

LR = 0.1
NEUTRAL = {"mix": 0.0, "smoothing": 0.0}


def setup(make_cfg, **options):
    torch.manual_seed(0)
    x, y = torch.randn(12, 1, 4, 4), torch.arange(12) % 3
    meta = LabeledImages(torch.randn(6, 1, 4, 4), torch.arange(6) % 3)
    method = build(make_cfg("method=l2rw", *(f"method.{k}={v}" for k, v in options.items())).method)
    method.setup(LabeledImages(x, y), meta, 3, torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    return method, model, x, y, meta


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))


def plain(model, x, y, meta):
    return reweight.weights_fwd(model, x, y, meta.images, meta.labels, LR).weights


@pytest.mark.parametrize("option", sorted(NEUTRAL))
def test_each_remedy_at_its_neutral_setting_gives_plain_l2rw_weights(make_cfg, option):
    method, model, x, y, meta = setup(make_cfg, **{option: NEUTRAL[option]})
    index = torch.arange(12)
    for _ in range(3):
        perturb(model)
        torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, plain(model, x, y, meta))


def test_mix_blends_with_uniform_and_never_skips(make_cfg):
    method, model, x, y, meta = setup(make_cfg, mix=0.25)
    index = torch.arange(12)
    expected = 0.75 * plain(model, x, y, meta) + 0.25 / 12
    weights = method.step_loss(model, x, y, index, LR).weights
    torch.testing.assert_close(weights, expected)
    assert (weights > 0).all()


def test_smoothing_averages_each_examples_weights_over_steps(make_cfg):
    method, model, x, y, meta = setup(make_cfg, smoothing=0.5)
    index = torch.arange(12)
    first = plain(model, x, y, meta)
    torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, reweight.normalize(0.5 + 0.5 * first * 12))
    perturb(model)
    second = plain(model, x, y, meta)
    memory = 0.5 * (0.5 + 0.5 * first * 12) + 0.5 * second * 12
    torch.testing.assert_close(method.step_loss(model, x, y, index, LR).weights, reweight.normalize(memory))


@pytest.mark.parametrize("option", ["mix=1.5", "smoothing=1.0"])
def test_out_of_range_remedies_are_named(make_cfg, option):
    with pytest.raises(UserError, match=rf"method\.{option.split('=')[0]}"):
        check_config(make_cfg("method=l2rw", f"method.{option}"))


def test_example_weights_csv_has_one_row_per_example_and_the_weights_the_steps_used(make_cfg, tmp_path):
    row = train(make_cfg("method=l2rw", "imbalance=0.5", "noise.kind=uniform", "noise.rate=0.3", "steps=30"), tmp_path / "run")
    examples = pd.read_csv(tmp_path / "run" / "example_weights.csv")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(examples) == row["train_size"] and examples["index"].tolist() == list(range(row["train_size"]))
    assert examples.corrupted.sum() == row["train_corrupted"]
    seen = examples[examples.steps_seen > 0]
    # every step's relative weights average 1 over its batch, so the steps_seen-weighted mean is 1
    assert (seen.mean_weight * seen.steps_seen).sum() / seen.steps_seen.sum() == pytest.approx(1.0)
    assert seen.steps_seen.sum() == (30 - row["skipped_steps"]) * 100  # batch 100, skipped steps not counted
    assert ((seen.zero_share >= 0) & (seen.zero_share <= 1)).all() and len(metrics) == 3


def test_example_weights_are_the_means_of_the_weights_each_example_got(tmp_path):
    from l2rw.weight_stats import WeightStats

    stats = WeightStats(torch.tensor([0, 1, 1]), torch.tensor([False, True, False]), ["a", "b"])
    stats.add(torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))  # relative: 2, 0
    stats.add(torch.tensor([0, 2]), torch.tensor([0.25, 0.75]))  # relative: 0.5, 1.5
    stats.flush()  # a metrics window ends; the per-example sums go on
    stats.add(torch.tensor([1, 2]), torch.tensor([0.5, 0.5]))  # relative: 1, 1
    stats.write_examples(tmp_path / "w.csv")
    assert (tmp_path / "w.csv").read_text().splitlines() == [
        "index,class,corrupted,mean_weight,zero_share,steps_seen",
        "0,a,0,1.25,0,2",
        "1,b,1,0.5,0.5,2",
        "2,b,0,1.25,0,2",
    ]
