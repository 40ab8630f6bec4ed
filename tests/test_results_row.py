"""The results row is declared once (l2rw.results.row): a run's row has exactly the declared
columns, in the declared order, and every reader groups runs by the same configuration columns."""
import pandas as pd
import pytest
import torch

from l2rw.results import row as results_row
from l2rw.results.read import config_columns
from l2rw.results.row import CONFIG_COLUMNS, OUTCOME_COLUMNS, RUN_COLUMNS, is_config, shot_accuracies
from l2rw.run.spec import validate
from l2rw.run.train import train
from l2rw.training.evaluation import Evaluation
from l2rw.training.state import BestEvaluation, FitResult


def option_columns_of(cfg) -> list[str]:
    """`<group>.<key>` of each option in the composed config, derived from the config itself."""
    return [f"{group}.{key}" for group in ("model", "method", "loss", "hardware")
            for key in cfg[group] if key not in ("name", "_target_", "device")]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgd", "l2rw"])
def test_a_finished_run_has_exactly_the_declared_columns_in_order(make_cfg, tmp_path, method):
    cfg = make_cfg(f"method={method}", "steps=2", "eval_every=1")
    row = train(cfg, tmp_path / "run")
    expected = ["run_id", "time", *CONFIG_COLUMNS, *option_columns_of(cfg), "config_hash", "run_dir", *OUTCOME_COLUMNS]
    assert list(row) == expected
    assert row["status"] == "ok" and row["method"] == method


def test_every_column_is_either_configuration_or_not():
    assert not any(is_config(column) for column in (*RUN_COLUMNS, *OUTCOME_COLUMNS))
    assert all(is_config(column) for column in (*CONFIG_COLUMNS, "method.impl", "loss.gamma", "hardware.amp"))
    assert not set(CONFIG_COLUMNS) & set(OUTCOME_COLUMNS)


def test_seeds_of_one_setting_differ_only_in_columns_the_report_does_not_group_by(make_cfg, tmp_path):
    rows = [results_row.config_part(validate(make_cfg(f"seed={seed}"), tmp_path / str(seed))) for seed in (0, 1)]
    differing = [column for column in rows[0] if rows[0][column] != rows[1][column]]
    assert set(differing) >= {"seed", "config_hash", "run_dir"}
    assert config_columns(pd.DataFrame(rows, dtype=str)) and not set(differing) & set(config_columns(pd.DataFrame(rows, dtype=str)))


def fit_result(best: BestEvaluation | None) -> FitResult:
    confusion = torch.tensor([[8, 2], [1, 9]])
    last = Evaluation(0.85, 0.85, [0.8, 0.9], confusion)
    return FitResult(last, last if best else None, best, None, 3, [0.25, 0.75], 0.5, 1.0)


def test_the_outcome_is_built_from_the_fit_result_and_the_data():
    best = BestEvaluation(step=40, val_balanced_accuracy=0.9, accuracy=0.7, balanced_accuracy=0.65, confusion=[[5, 5], [2, 8]])
    counts = torch.tensor([150, 30])
    outcome = results_row.outcome_part(fit_result(best), counts, train_size=180, train_corrupted=7, meta_size=20,
                                       provenance={"data_source": "/data/x"}, wall_seconds=12.3456, peak_memory_mb=99.94)
    assert list(outcome) == list(OUTCOME_COLUMNS)
    # class 0 (150 images) is many-shot: 8 of its 10 test images right; class 1 (30) is medium-shot: 9 of 10
    assert (outcome["many_shot_accuracy"], outcome["medium_shot_accuracy"], outcome["few_shot_accuracy"]) == (0.8, 0.9, "")
    assert (outcome["best_step"], outcome["best_many_shot_accuracy"], outcome["best_medium_shot_accuracy"]) == (40, 0.5, 0.8)
    assert outcome["trained_prior"] == "0.2500 0.7500" and outcome["skipped_steps"] == 3 and outcome["meta_size"] == 20
    assert (outcome["data_source"], outcome["data_cache_key"], outcome["wall_seconds"], outcome["peak_memory_mb"]) == ("/data/x", "", 12.346, 99.9)


def test_without_validation_the_best_columns_are_empty():
    outcome = results_row.outcome_part(fit_result(None), torch.tensor([150, 30]), train_size=180, train_corrupted=0, meta_size=20,
                                       provenance={}, wall_seconds=1, peak_memory_mb=1)
    assert all(outcome[column] == "" for column in results_row.BEST_COLUMNS) and outcome["val_balanced_accuracy"] == ""


def test_a_loader_reporting_an_undeclared_column_is_a_programming_error():
    with pytest.raises(AssertionError, match="PROVENANCE_COLUMNS"):
        results_row.provenance_columns({"where_from": "x"})


def test_shot_groups_follow_the_training_counts():
    confusion = torch.diag(torch.tensor([10, 10, 10]))
    confusion[2, 0] = 10  # the few-shot class: half its test images wrong
    counts = torch.tensor([500, 50, 5])
    assert shot_accuracies(confusion, counts) == {"many_shot_accuracy": 1.0, "medium_shot_accuracy": 1.0, "few_shot_accuracy": 0.5}


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


def test_shot_groups_split_at_more_than_100_and_fewer_than_20_training_images():
    """Liu et al.'s bounds: 101 images is many-shot, 100 and 20 medium-shot, 19 few-shot. Each
    class gets its own share of 10 test images right, so a class in the wrong group shows."""
    train_counts = torch.tensor([101, 100, 20, 19])
    correct = [9, 7, 4, 1]
    confusion = torch.diag(torch.tensor(correct)) + torch.diag(10 - torch.tensor(correct)).roll(1, dims=1)  # wrong: the next class
    assert shot_accuracies(confusion, train_counts) == {
        "many_shot_accuracy": correct[0] / 10,
        "medium_shot_accuracy": (correct[1] + correct[2]) / 20,
        "few_shot_accuracy": correct[3] / 10,
    }


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
