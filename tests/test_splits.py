"""Split invariants: disjoint, balanced meta set, training counts that follow the profile."""
import pytest
import torch

from l2rw.data import build_splits
from l2rw.data.splits import longtail_counts, step_counts
from l2rw.errors import UserError
from tests.sources import image_ids

INDEXED = ["dataset.source._target_=tests.sources.indexed_source", "dataset.test_per_class=10"]


def class_counts(labels: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(labels, minlength=k).tolist()


@pytest.mark.parametrize("profile", ["dataset.profile=step", "dataset.profile=longtail"])
def test_meta_train_test_are_disjoint_and_meta_is_balanced(make_cfg, profile):
    splits = build_splits(make_cfg(*INDEXED, profile, "meta.per_class=5", "imbalance=0.7", "imbalance_ratio=10"))
    train, meta, test = (image_ids(part.images) for part in (splits.train, splits.meta, splits.test))
    assert len(train) == len(splits.train) and len(meta) == len(splits.meta) and len(test) == len(splits.test)
    assert not (train & meta) and not (train & test) and not (meta & test)
    assert class_counts(splits.meta.labels, 4) == [5, 5, 5, 5]
    assert class_counts(splits.test.labels, 4) == [10, 10, 10, 10]


@pytest.mark.parametrize("imbalance", [0.25, 0.5, 0.7, 0.9])
def test_step_profile_majority_fraction(make_cfg, imbalance):
    splits = build_splits(make_cfg(*INDEXED, "meta.per_class=3", f"imbalance={imbalance}"))
    counts = class_counts(splits.train.labels, 4)
    assert counts[0] == max(counts) and len(set(counts[1:])) == 1
    assert counts[0] / sum(counts) == pytest.approx(imbalance, abs=0.015)


def test_step_profile_majority_class_and_subset(make_cfg):
    splits = build_splits(make_cfg(*INDEXED, "dataset.classes=[3,1]", "dataset.majority_class=1", "imbalance=0.8"))
    assert splits.class_names == ["class3", "class1"]
    counts = class_counts(splits.train.labels, 2)
    assert counts[1] > counts[0] and counts[1] / sum(counts) == pytest.approx(0.8, abs=0.02)


def exponential_profile(n_max: int, ratio: int, k: int) -> list[int]:
    """floor(n_max * ratio^(-c/(k-1))) in whole numbers: the largest n with n^(k-1) * ratio^c <= n_max^(k-1)."""
    def largest(c: int) -> int:
        n = n_max
        while n ** (k - 1) * ratio**c > n_max ** (k - 1):
            n -= 1
        return n

    return [largest(c) for c in range(k)]


def test_longtail_profile_follows_exponential_decay(make_cfg):
    cfg = make_cfg(*INDEXED, "dataset.profile=longtail", "imbalance_ratio=10")
    splits = build_splits(cfg)
    counts = class_counts(splits.train.labels, 4)
    available = 60 - 10 - cfg.meta.per_class  # indexed_source's 60 a class, less test and meta images
    assert counts == exponential_profile(available, 10, 4)  # [47, 21, 10, 4]


def test_count_functions_directly():
    assert step_counts([100, 100, 100], 1 / 3, 0) == [100, 100, 100]
    assert step_counts([100, 30, 100], 0.5, 2) == [30, 30, 60]  # minority runs out: majority shrinks
    assert step_counts([127] * 10, 0.9, 0) == [81] + [1] * 9  # exactly 0.9 rather than 127/136
    assert longtail_counts([1000] * 10, 100) == exponential_profile(1000, 100, 10)
    # a whole count stays whole where floating point lands just below it (1024 * 64^(-5/6) = 31.999...)
    assert longtail_counts([1024] * 7, 64) == exponential_profile(1024, 64, 7) == [1024 >> c for c in range(7)]


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["imbalance=1.0"], "imbalance"),
        (["imbalance=0.1"], "imbalance"),
        (["meta.per_class=60"], "meta.per_class"),
        (["meta.per_class=0"], "meta.per_class"),
        (["dataset.profile=zipf"], "dataset.profile"),
        (["dataset.classes=[0,9]"], "dataset.classes"),
        (["dataset.classes=[0,true]"], "dataset.classes"),  # YAML's true is not class 1
        (["dataset.majority_class=true"], "dataset.majority_class"),
        (["dataset.profile=longtail", "imbalance_ratio=1000"], "imbalance_ratio"),
        (["dataset.majority_class=2", "dataset.classes=[0,1]"], "dataset.majority_class"),
    ],
)
def test_impossible_requests_name_the_field(make_cfg, overrides, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        build_splits(make_cfg(*INDEXED, *overrides))


def test_same_seed_same_split_other_seed_other_split(make_cfg):
    a, b, c = (build_splits(make_cfg(*INDEXED, f"seed={s}")) for s in (0, 0, 1))
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.meta.images, c.meta.images)
