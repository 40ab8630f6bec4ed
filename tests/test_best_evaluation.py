""""Best": the test scores at the evaluation with the highest validation balanced accuracy, compared
on exact counts so the first of equal scores wins whatever their float means round to; kept
through a checkpoint, and into the results row's best_* columns."""
from fractions import Fraction

import pytest
import torch

from l2rw.data import build_splits
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.results import row as results_row
from l2rw.training import evaluation
from l2rw.training import loop as training_loop
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.evaluation import Evaluation
from l2rw.training.loop import FitOptions
from l2rw.training.optimization import make_optimizer, make_scheduler

VAL_SUPPORT = [5] * 10  # dataset.val_per_class=5 of digits' 10 classes
TEST_SUPPORT = [40, 40, 20, 20, 20, 20, 10, 10, 10, 10]  # unequal, so accuracy and balanced accuracy differ
# 29 of 50 validation images right either way; the float mean of the recalls rounds to 0.58 for the
# first and to 0.5800000000000001 for the second
TIED_VAL_CORRECT = ([5, 5, 5, 5, 5, 4, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3, 3, 3, 2])
TRAIN_COUNTS = [500, 200, 80, 60, 40, 30, 15, 10, 5, 2]  # two many-shot, four medium-shot and four few-shot classes


def scored(correct: list[int], support: list[int]) -> Evaluation:
    """An evaluation with `correct` images right per class (the others predicted as the next
    class), its scores computed as `evaluate` computes them."""
    classes = len(correct)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    for c, (right, n) in enumerate(zip(correct, support)):
        confusion[c, c] += right
        confusion[c, (c + 1) % classes] += n - right
    recall = confusion.diag().double() / confusion.sum(1)
    return Evaluation(
        accuracy=confusion.diag().sum().item() / confusion.sum().item(), balanced_accuracy=recall.mean().item(),
        per_class_recall=recall.tolist(), confusion=confusion,
    )


@pytest.fixture
def digits(make_cfg):
    cfg = make_cfg("dataset.val_per_class=5")
    return cfg, build_splits(cfg)


def script_evaluations(monkeypatch, splits, val: list, test: list) -> None:
    """`evaluate` returns these in turn for the validation and the test split, whatever the model."""
    queues = {id(splits.val): iter(val), id(splits.test): iter(test)}
    monkeypatch.setattr(evaluation, "evaluate", lambda model, data, *rest: next(queues[id(data)]))


def fit_evaluating_every_two_steps(cfg, splits, tmp_path, steps: int, checkpoint: Checkpoint | None = None):
    model = build_model(cfg.model, splits.image_shape, splits.num_classes)
    optimizer = make_optimizer(model, cfg)
    return training_loop.fit(
        model, Method(), splits, optimizer, make_scheduler(optimizer, "constant", steps),
        FitOptions(steps=steps, batch_size=10, eval_every=2, progress=False), metrics_csv=tmp_path / "metrics.csv",
        checkpoint=checkpoint,
    )


def exact_recall_mean(evaluation: Evaluation) -> Fraction:
    confusion = evaluation.confusion
    return sum(Fraction(int(confusion[c, c]), int(confusion[c].sum())) for c in range(len(confusion))) / len(confusion)


def pooled_accuracy(correct: list[int], support: list[int], classes: list[int]) -> float:
    return sum(correct[c] for c in classes) / sum(support[c] for c in classes)


def test_best_columns_are_the_test_scores_at_the_first_best_validation_evaluation(digits, tmp_path, monkeypatch):
    """Validation peaks at steps 4 and 6 alike (the float says 6), test at step 6: "best" is step 4's test scores."""
    cfg, splits = digits
    val = [scored(correct, VAL_SUPPORT) for correct in ([2] * 10, *TIED_VAL_CORRECT, [3] * 5 + [2] * 5)]
    test_correct = [
        [10, 10, 5, 5, 5, 5, 2, 2, 2, 2],
        [36, 32, 15, 14, 12, 10, 6, 5, 3, 1],
        TEST_SUPPORT,
        [30, 30, 10, 10, 10, 10, 5, 5, 5, 5],
    ]
    assert exact_recall_mean(val[1]) == exact_recall_mean(val[2]) == Fraction(29, 50)
    assert val[1].balanced_accuracy < val[2].balanced_accuracy  # a float compare would take step 6
    script_evaluations(monkeypatch, splits, val, [scored(correct, TEST_SUPPORT) for correct in test_correct])

    result = fit_evaluating_every_two_steps(cfg, splits, tmp_path, steps=8)

    assert (result.best.step, result.best.val_balanced_accuracy) == (4, val[1].balanced_accuracy)
    at_best = test_correct[1]
    recalls = [right / n for right, n in zip(at_best, TEST_SUPPORT)]
    assert results_row.best_columns(result.best, torch.tensor(TRAIN_COUNTS)) == pytest.approx({
        "best_step": 4,
        "best_accuracy": sum(at_best) / sum(TEST_SUPPORT),
        "best_balanced_accuracy": sum(recalls) / len(recalls),
        "best_many_shot_accuracy": pooled_accuracy(at_best, TEST_SUPPORT, [0, 1]),
        "best_medium_shot_accuracy": pooled_accuracy(at_best, TEST_SUPPORT, [2, 3, 4, 5]),
        "best_few_shot_accuracy": pooled_accuracy(at_best, TEST_SUPPORT, [6, 7, 8, 9]),
    }, abs=1e-6)
    assert result.evaluation.balanced_accuracy == scored(test_correct[3], TEST_SUPPORT).balanced_accuracy  # "last"


def test_a_tie_after_a_resume_keeps_the_evaluation_before_the_checkpoint(digits, tmp_path, monkeypatch):
    """The checkpoint at step 2 holds the best's exact score: step 4's equal score, whose float is
    larger, does not replace it in the resumed run either."""
    cfg, splits = digits
    val = [scored(correct, VAL_SUPPORT) for correct in TIED_VAL_CORRECT]
    test = [scored([4] * 10, TEST_SUPPORT), scored([9] * 10, TEST_SUPPORT)]
    checkpoint = Checkpoint(tmp_path, every=2, config_hash="digits", steps=4)

    script_evaluations(monkeypatch, splits, val, test)
    whole = fit_evaluating_every_two_steps(cfg, splits, tmp_path, steps=4, checkpoint=checkpoint)
    script_evaluations(monkeypatch, splits, val[1:], test[1:])
    resumed = fit_evaluating_every_two_steps(cfg, splits, tmp_path, steps=4, checkpoint=checkpoint)

    assert whole.best.step == 2 and whole.best.confusion == test[0].confusion.tolist()
    assert resumed.best == whole.best
