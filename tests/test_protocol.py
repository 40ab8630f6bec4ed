"""The fair protocol's pieces: a validation split, a capped training set, baselines that also train
on the meta images, long-tail columns, and collapse that is never silent."""

import pandas as pd
import pytest
import torch

from l2rw import training_loop
from l2rw.data import build_splits
from l2rw.errors import UserError
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.optimization import make_optimizer, make_scheduler
from l2rw.results_row import shot_accuracies
from l2rw.train import train
from tests.sources import image_ids

INDEXED = ["dataset.source._target_=tests.sources.indexed_source", "dataset.test_per_class=10"]


def counts(labels: torch.Tensor, k: int = 4) -> list[int]:
    return torch.bincount(labels, minlength=k).tolist()


@pytest.mark.parametrize("profile", ["dataset.profile=step", "dataset.profile=longtail"])
def test_validation_split_is_balanced_clean_and_disjoint(make_cfg, profile):
    cfg = make_cfg(*INDEXED, profile, "dataset.val_per_class=7", "meta.per_class=5", "imbalance=0.7",
                   "imbalance_ratio=10", "noise.kind=uniform", "noise.rate=0.5")
    splits = build_splits(cfg)
    parts = [image_ids(p.images) for p in (splits.train, splits.meta, splits.test, splits.val)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # no image in two splits
    assert counts(splits.val.labels) == [7, 7, 7, 7]
    # clean: each indexed image's true class is its index mod 4
    ids = torch.tensor(sorted(image_ids(splits.val.images)))
    assert counts(ids % 4) == [7, 7, 7, 7]


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
    full = counts(build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5")).train.labels)
    capped = counts(build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5", "dataset.train_size=30")).train.labels)
    assert sum(capped) == 30 and sum(full) > 30
    assert capped[0] / sum(capped) == pytest.approx(full[0] / sum(full), abs=0.05)
    larger = build_splits(make_cfg(*INDEXED, "imbalance=0.7", "meta.per_class=5", "dataset.train_size=100000"))
    assert counts(larger.train.labels) == full
    with pytest.raises(UserError, match=r"dataset\.train_size=2 "):
        build_splits(make_cfg(*INDEXED, "dataset.train_size=2"))


def test_meta_add_to_train_gives_the_baseline_the_clean_meta_images(make_cfg):
    plain = build_splits(make_cfg(*INDEXED, "meta.per_class=5", "noise.kind=uniform", "noise.rate=0.5"))
    added = build_splits(make_cfg(*INDEXED, "meta.per_class=5", "noise.kind=uniform", "noise.rate=0.5", "meta.add_to_train=true"))
    assert image_ids(added.train.images) == image_ids(plain.train.images) | image_ids(plain.meta.images)
    assert len(added.train) == len(plain.train) + len(plain.meta)
    assert not added.train_corrupted[len(plain.train):].any()
    torch.testing.assert_close(added.train.labels[len(plain.train):], plain.meta.labels)


def test_shot_columns_match_a_hand_computed_case():
    # classes with 500, 60, 20, 19 and 3 training images: many, medium, medium, few, few
    train_counts = torch.tensor([500, 60, 20, 19, 3])
    confusion = torch.zeros(5, 5, dtype=torch.long)
    for c, correct in enumerate([9, 6, 4, 2, 1]):  # 10 test images per class
        confusion[c, c] = correct
        confusion[c, (c + 1) % 5] = 10 - correct
    assert shot_accuracies(confusion, train_counts) == {
        "many_shot_accuracy": 0.9, "medium_shot_accuracy": 0.5, "few_shot_accuracy": 0.15,
    }
    assert shot_accuracies(confusion, torch.tensor([50] * 5))["many_shot_accuracy"] == ""


class TurnsToOneClass(Method):
    """Plain SGD that, after `healthy_steps`, trains on labels replaced by class 0: a model forced
    to collapse after learning."""

    def __init__(self, healthy_steps: int):
        self.healthy_steps, self.steps = healthy_steps, 0

    def step_loss(self, model, x, y, index, lr):
        self.steps += 1
        return super().step_loss(model, x, y if self.steps <= self.healthy_steps else torch.zeros_like(y), index, lr)


def test_a_forced_collapse_is_flagged_with_its_step(make_cfg, tmp_path, capsys):
    cfg = make_cfg("imbalance=0.1", "lr=0.05", "momentum=0.9")
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    outcome = training_loop.fit(
        model, TurnsToOneClass(100), splits, optimizer, make_scheduler(optimizer, "constant", 200), steps=200,
        batch_size=50, eval_every=50, generator=torch.Generator().manual_seed(0), metrics_csv=tmp_path / "metrics.csv",
        progress=False,
    )
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.collapsed.tolist() == [0, 0, 1, 1] and metrics.top_class_share.iloc[-1] >= 0.9
    assert outcome.collapse_step == 150
    assert "warning: collapsed at step 150: " in capsys.readouterr().err


def test_uniform_outputs_count_as_collapse_whatever_the_argmax():
    confusion = torch.eye(3, dtype=torch.long) * 3 + 2  # predictions spread over every class
    assert training_loop.collapse_symptom(training_loop.Evaluation(0.3, 0.3, [0.3] * 3, confusion, 0.9), ["a", "b", "c"]) is None
    uniform = training_loop.Evaluation(0.3, 0.3, [0.3] * 3, confusion, 1 / 3 + 0.001)
    assert "the outputs are uniform" in training_loop.collapse_symptom(uniform, ["a", "b", "c"])


def test_a_model_right_on_some_classes_and_wrong_on_others_is_not_collapsed():
    """Confident outputs score a loss near ln K when half of them are right and half badly wrong;
    the outputs are not uniform, so it is no collapse (the flag once read the loss)."""
    confusion = torch.tensor([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 0, 5], [0, 0, 5, 0]])
    evaluation = training_loop.Evaluation(0.5, 0.5, [1, 1, 0, 0], confusion, 0.95)
    assert training_loop.collapse_symptom(evaluation, list("abcd")) is None


def test_a_healthy_run_is_not_flagged(make_cfg, tmp_path, capsys):
    row = train(make_cfg("imbalance=0.5", "steps=300", "eval_every=100"), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert row["collapsed_step"] == "" and metrics.collapsed.iloc[-1] == 0
    assert "collapsed" not in capsys.readouterr().err
    assert row["balanced_accuracy"] > 0.3  # chance is 0.1


@pytest.mark.slow
def test_a_run_that_ends_collapsed_says_so_in_its_row_and_at_its_end(make_cfg, tmp_path, capsys):
    cfg = make_cfg(f"method._target_={__name__}.TurnsToOneClass", "+method.healthy_steps=100", "imbalance=0.1",
                   "lr=0.05", "momentum=0.9", "schedule=constant", "steps=200", "eval_every=50", "batch_size=50")
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["collapsed_step"] == 150
    assert pd.read_csv(tmp_path / "results.csv").collapsed_step.tolist() == [150]
    assert pd.read_csv(tmp_path / "run" / "metrics.csv").collapsed.tolist() == [0, 0, 1, 1]
    err = capsys.readouterr().err
    assert "warning: collapsed at step 150: " in err  # when it starts
    assert f"warning: this run ended collapsed (since step 150): its model predicts (nearly) one class or uniform outputs; " \
           f"see {tmp_path / 'run' / 'metrics.csv'}" in err  # and at the end


@pytest.mark.slow
def test_results_row_carries_validation_and_shot_columns_of_its_confusion(make_cfg, tmp_path):
    """Liu et al.'s groups: classes with > 100 training images (many), 20-100 (medium), < 20 (few);
    each group's accuracy pools its classes' test images. This profile has classes in all three."""
    row = train(make_cfg("dataset.profile=longtail", "imbalance_ratio=20", "dataset.val_per_class=5", "steps=200", "eval_every=200"),
                tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert row["val_balanced_accuracy"] == pytest.approx(metrics.val_balanced_accuracy.iloc[-1], abs=1e-6)
    confusion = pd.read_csv(tmp_path / "run" / "confusion.csv", index_col=0, dtype=str).astype(int)
    confusion.index = confusion.index.astype(str)
    train_counts = pd.read_csv(tmp_path / "run" / "example_weights.csv")["class"].astype(str).value_counts()
    groups = {"many": lambda n: n > 100, "medium": lambda n: 20 <= n <= 100, "few": lambda n: n < 20}
    for group, holds in groups.items():
        classes = [name for name in confusion.index if holds(train_counts[str(name)])]
        assert classes, group
        correct = sum(confusion.loc[name, name] for name in classes)
        tested = sum(confusion.loc[name].sum() for name in classes)
        assert row[f"{group}_shot_accuracy"] == pytest.approx(correct / tested, abs=1e-6), group
    # a model that learned: the groups' accuracies tell them apart
    assert len({row["many_shot_accuracy"], row["medium_shot_accuracy"], row["few_shot_accuracy"]}) == 3


def test_clip_grad_norm_bounds_each_update(make_cfg, tmp_path):
    """With a tiny clip, each SGD step moves the parameters by at most lr x clip."""
    cfg = make_cfg("clip_grad_norm=0.01", "lr=0.1", "momentum=0", "weight_decay=0", "steps=1", "eval_every=1")
    splits = build_splits(cfg)
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = make_optimizer(model, cfg)
    training_loop.fit(model, Method(), splits, optimizer, make_scheduler(optimizer, "constant", 1), steps=1, batch_size=50,
                eval_every=1, generator=torch.Generator().manual_seed(0), metrics_csv=tmp_path / "m.csv",
                progress=False, clip_grad_norm=cfg.clip_grad_norm)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() == pytest.approx(0.1 * 0.01, rel=1e-3)
