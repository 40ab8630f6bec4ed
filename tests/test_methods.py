"""l2rw.methods.base and the samplers: which examples a step sees (epochs, class-balanced draws,
meta batches) and that a method restored from its state goes on drawing the same ones. (Each
method's weights: test_methods_<name>.py; L2RW's weight math: test_reweight*.py.)"""
from functools import partial

import pytest
import torch

from l2rw.data import LabeledImages, build_splits
from l2rw.run.instantiation import build
from l2rw.run.train import build_network
from l2rw.training.optimization import LrSchedule
from tests.helpers.configs import config_options


def test_weighted_sampler_draws_classes_near_uniformly(make_cfg):
    sampler = build(make_cfg("method=weighted_sampler").method)
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    train = LabeledImages(torch.zeros(1000, 1, 1, 1, dtype=torch.uint8), labels)
    sampler.setup(train, train, 3, torch.Generator().manual_seed(0))
    batches = sampler.batches(100)
    drawn = torch.cat([labels[next(batches)] for _ in range(200)])
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.02), share
    # a uniform sampler would give [0.9, 0.09, 0.01]


def test_sgd_batches_cover_each_example_once_per_epoch(make_cfg):
    method = build(make_cfg("method=sgd").method)
    train = LabeledImages(torch.zeros(10, 1, 1, 1, dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    method.setup(train, train, 1, torch.Generator().manual_seed(0))
    batches = method.batches(5)
    assert sorted(torch.cat([next(batches), next(batches)]).tolist()) == list(range(10))


def meta_method(make_cfg, meta_size: int, meta_batch_size: int):
    """method=l2rw set up with a meta set whose image i is the number i and label i mod 3."""
    method = build(make_cfg("method=l2rw", f"method.meta_batch_size={meta_batch_size}").method)
    train = LabeledImages(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    meta = LabeledImages(torch.arange(meta_size, dtype=torch.float).view(-1, 1), torch.arange(meta_size) % 3)
    method.setup(train, meta, 3, torch.Generator().manual_seed(0))
    return method


def test_a_meta_set_that_fits_one_meta_batch_is_used_whole_every_step(make_cfg):
    method = meta_method(make_cfg, meta_size=6, meta_batch_size=6)
    for _ in range(3):
        images, labels = method.meta_batch()
        assert images.view(-1).tolist() == list(range(6)) and labels.tolist() == [i % 3 for i in range(6)]


def test_a_larger_meta_set_gives_a_fresh_sample_of_meta_batch_size_each_step(make_cfg):
    method = meta_method(make_cfg, meta_size=30, meta_batch_size=5)
    drawn = []
    for _ in range(40):
        images, labels = method.meta_batch()
        ids = images.view(-1).long()
        assert len(ids) == 5 and len(set(ids.tolist())) == 5  # without replacement
        assert torch.equal(labels, ids % 3)  # each image keeps its own label
        drawn.append(tuple(sorted(ids.tolist())))
    assert len(set(drawn)) > 30  # a new sample each step, not one fixed subset
    assert set().union(*drawn) == set(range(30))  # over the steps, the whole meta set


@pytest.mark.parametrize("method", config_options("method"))
@pytest.mark.slow
def test_a_method_restored_from_its_state_draws_the_same_batches(make_cfg, method):
    cfg = make_cfg(f"method={method}")
    splits = build_splits(cfg)

    def started(seed: int):
        instance = build(cfg.method)
        # a method that trains a network of its own (co-teaching) builds it as the run would
        new_network = partial(build_network, cfg, splits, torch.device("cpu"), LrSchedule("constant", 10))
        instance.setup(splits.train, splits.meta, splits.num_classes, torch.Generator().manual_seed(seed), new_network=new_network)
        return instance

    original = started(0)
    batches = original.batches(16)
    for _ in range(7):  # mid-way through an epoch (digits' training set holds 90 images)
        next(batches)
    state = original.state_dict()
    expected = [next(batches) for _ in range(5)]
    restored = started(1)  # another seed: only the loaded state can make the batches match
    restored.load_state_dict(state)
    batches = restored.batches(16)
    assert all(torch.equal(next(batches), batch) for batch in expected)
