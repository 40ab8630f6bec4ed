"""l2rw.data.splits: disjoint splits, a balanced meta set and validation split, training counts that follow
the profile, the training-set cap and baselines that also train on the meta images."""
import pytest
import torch

from l2rw.data import build_splits
from l2rw.data.splits import longtail_counts, step_counts
from l2rw.errors import UserError
from l2rw.run.config_schema import check_config
from tests.helpers.sources import INDEXED, image_ids


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
        (["dataset.classes=[0,9]"], "dataset.classes"),
        (["dataset.classes=[0,true]"], "dataset.classes"),  # YAML's true is not class 1
        (["dataset.majority_class=true"], "dataset.majority_class"),
        (["dataset.profile=longtail", "imbalance_ratio=1000"], "imbalance_ratio"),
        (["dataset.majority_class=2", "dataset.classes=[0,1]"], "dataset.majority_class"),
    ],
)
def test_impossible_requests_name_the_field(make_cfg, overrides, field):
    """As a run meets them: the config schema refuses what the config alone rules out, the splits
    what needs the data."""
    cfg = make_cfg(*INDEXED, *overrides)
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        check_config(cfg)
        build_splits(cfg)


def test_same_seed_same_split_other_seed_other_split(make_cfg):
    a, b, c = (build_splits(make_cfg(*INDEXED, f"seed={s}")) for s in (0, 0, 1))
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.meta.images, c.meta.images)


@pytest.mark.parametrize("profile", ["dataset.profile=step", "dataset.profile=longtail"])
def test_validation_split_is_balanced_clean_and_disjoint(make_cfg, profile):
    cfg = make_cfg(*INDEXED, profile, "dataset.val_per_class=7", "meta.per_class=5", "imbalance=0.7",
                   "imbalance_ratio=10", "noise.kind=uniform", "noise.rate=0.5")
    splits = build_splits(cfg)
    parts = [image_ids(p.images) for p in (splits.train, splits.meta, splits.test, splits.val)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # no image in two splits
    assert class_counts(splits.val.labels, 4) == [7, 7, 7, 7]
    # clean: each indexed image's true class is its index mod 4
    ids = torch.tensor(sorted(image_ids(splits.val.images)))
    assert class_counts(ids % 4, 4) == [7, 7, 7, 7]


def test_no_validation_split_by_default_and_the_training_set_is_unchanged_by_it(make_cfg):
    without = build_splits(make_cfg(*INDEXED, "imbalance=0.5", "meta.per_class=5"))
    assert without.val is None
    with_val = build_splits(make_cfg(*INDEXED, "imbalance=0.5", "meta.per_class=5", "dataset.val_per_class=5"))
    assert image_ids(without.meta.images) == image_ids(with_val.meta.images)  # taken after meta
    assert not image_ids(with_val.val.images) & image_ids(with_val.train.images)


def test_validation_too_large_for_a_class_is_named(make_cfg):
    with pytest.raises(UserError, match=r"dataset\.val_per_class=50"):
        build_splits(make_cfg(*INDEXED, "dataset.val_per_class=50"))


def test_train_size_caps_the_training_set_keeping_the_profile(make_cfg):
    full = class_counts(build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5")).train.labels, 4)
    capped = class_counts(build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5", "dataset.train_size=30")).train.labels, 4)
    assert sum(capped) == 30 and sum(full) > 30
    assert capped[0] / sum(capped) == pytest.approx(full[0] / sum(full), abs=0.05)
    larger = build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5", "dataset.train_size=100000"))
    assert class_counts(larger.train.labels, 4) == full
    with pytest.raises(UserError, match=r"dataset\.train_size=2 "):
        build_splits(make_cfg(*INDEXED, "dataset.train_size=2"))


def test_meta_add_to_train_gives_the_baseline_the_clean_meta_images(make_cfg):
    plain = build_splits(make_cfg(*INDEXED, "meta.per_class=5", "noise.kind=uniform", "noise.rate=0.5"))
    added = build_splits(make_cfg(*INDEXED, "meta.per_class=5", "noise.kind=uniform", "noise.rate=0.5", "meta.add_to_train=true"))
    assert image_ids(added.train.images) == image_ids(plain.train.images) | image_ids(plain.meta.images)
    assert len(added.train) == len(plain.train) + len(plain.meta)
    assert not added.train_corrupted[len(plain.train):].any()
    torch.testing.assert_close(added.train.labels[len(plain.train):], plain.meta.labels)
