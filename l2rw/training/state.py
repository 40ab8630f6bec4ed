"""What the training loop keeps and returns: `LoopState`, checkpointed with the model so a run
resumes mid-way; `BestEvaluation`, the test scores at the best validation evaluation; and
`FitResult`, what `l2rw.training.loop.fit` hands back."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import TYPE_CHECKING

import torch

from l2rw.training.trained_prior import TrainedPrior
from l2rw.training.weight_stats import WeightStats, weight_columns

if TYPE_CHECKING:  # the evaluator fills in the state: only the annotation refers back
    from l2rw.data import Splits
    from l2rw.training.evaluation import Evaluation

# metrics.csv's columns before the mean weights (`weight_stats.weight_columns`)
METRIC_COLUMNS = [
    "step", "train_loss", "meta_loss", "accuracy", "balanced_accuracy", "val_balanced_accuracy",
    "top_class_share", "collapsed", "zero_weight_share", "skipped_steps", "seconds",
]


@dataclass
class LoopState:
    """What the loop accumulates: checkpointed with the model, so a run resumes mid-way."""

    step: int = 0
    skipped: int = 0
    window_loss: float = 0.0
    window_zero_share: float = 0.0
    window_steps: int = 0
    seconds: float = 0.0       # time spent by this run, across resumptions
    eval_seconds: float = 0.0
    # each process's first `method.warmup_steps` steps compile (hardware.compile) and warm up
    # allocators: counted apart, so seconds_per_step is the steady pace
    warmup_seconds: float = 0.0
    warmed_up_steps: int = 0
    metrics: list[dict] = field(default_factory=list)  # the metrics.csv rows so far
    best: dict | None = None  # BestEvaluation's fields at the best validation score so far
    # the best's exact_balanced_accuracy on validation as [numerator, denominator]: a checkpoint holds no Fraction
    best_val_exact: list[int] | None = None
    trained_prior: list[float] | None = None  # TrainedPrior's class masses
    weight_stats: dict = field(default_factory=dict)   # WeightStats' window, when checkpointed
    collapse_step: int | None = None  # first evaluation of the current collapsed stretch

    def add_step(self, loss: float, zero_share: float) -> None:
        self.window_loss += loss
        self.window_zero_share += zero_share
        self.window_steps += 1

    def close_window(self) -> dict:
        """The means over the steps since the last evaluation, which start a new window."""
        means = {"train_loss": self.window_loss / self.window_steps, "zero_weight_share": self.window_zero_share / self.window_steps}
        self.window_loss, self.window_zero_share, self.window_steps = 0.0, 0.0, 0
        return means

    def best_val_score(self) -> Fraction | None:
        """The exact validation score of `best` (None: none yet); the float's own value for a
        checkpoint saved before the exact one was kept."""
        if self.best is None:
            return None
        if self.best_val_exact is None:
            return Fraction(self.best["val_balanced_accuracy"])
        return Fraction(*self.best_val_exact)

    def keep_if_best(self, best: BestEvaluation, val_score: Fraction) -> bool:
        """Keep `best` when its exact validation score beats the best so far (ties keep the first);
        whether it did."""
        so_far = self.best_val_score()
        if so_far is not None and val_score <= so_far:
            return False
        self.best = asdict(best)
        self.best_val_exact = [val_score.numerator, val_score.denominator]
        return True


@dataclass
class BestEvaluation:
    """The test scores at the evaluation with the highest validation balanced accuracy (the
    first such, on ties, compared exactly): "best" beside the last evaluation's "last". Chosen on
    validation only."""

    step: int
    val_balanced_accuracy: float
    accuracy: float
    balanced_accuracy: float
    confusion: list[list[int]]  # (true class, predicted class) counts, for the shot columns


@dataclass
class FitResult:
    evaluation: Evaluation               # the last evaluation, on the test set
    val_evaluation: Evaluation | None    # the last evaluation on validation (None: no validation split)
    best: BestEvaluation | None          # test at the best validation evaluation (None: no validation split)
    collapse_step: int | None            # where the collapse the run ends in began (None: it ends healthy)
    skipped_steps: int
    trained_prior: list[float]           # each class's share of the example weights, steps counted by their lr
    seconds_per_step: float
    warmup_seconds: float


def loop_data_problem(loop: dict, splits: Splits) -> str | None:
    """Why a saved loop state (its keys and their types checked: `l2rw.training.checkpoint`)
    cannot be one of a run on `splits`; None when it can. A part left out takes LoopState's default."""
    state = LoopState(**loop)
    if state.metrics and (problem := _metrics_problem(state.metrics, weight_columns(splits.class_names), state.step)):
        return problem
    if state.best is not None and (problem := _best_problem(state.best, splits.num_classes, state.step)):
        return f"best {problem}"
    if state.best_val_exact is not None and not _is_fraction(state.best_val_exact):
        return "best_val_exact is not a [numerator, denominator > 0] pair"
    if state.trained_prior is not None:
        if problem := TrainedPrior(splits.num_classes, torch.device("cpu")).state_problem(state.trained_prior):
            return f"trained_prior is {problem}"
    if state.weight_stats:
        weight_stats = WeightStats(splits.train.labels.cpu(), splits.train_corrupted.cpu(), splits.class_names)
        if problem := weight_stats.state_problem(state.weight_stats):
            return f"weight_stats: {problem}"
    return None


def _metrics_problem(rows: list, weight_columns: list[str], step: int) -> str | None:
    """Why `rows` are not metrics.csv's rows up to `step`: its columns, each a number or blank,
    at increasing steps."""
    columns, last_step = METRIC_COLUMNS + weight_columns, 0
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or row.keys() != set(columns):
            return f"metrics row {number} does not hold metrics.csv's columns"
        if odd := [column for column, value in row.items() if not (_is_number(value) or value == "")]:
            return f"metrics row {number} has {odd[0]}={row[odd[0]]!r}, not a number"
        if not (isinstance(row["step"], int) and last_step < row["step"] <= step):
            return f"metrics row {number} is of step {row['step']!r}, not one after {last_step} up to {step}"
        last_step = row["step"]
    return None


def _best_problem(best: object, num_classes: int, step: int) -> str | None:
    """Why `best` is not BestEvaluation's fields at a step up to `step`, its confusion `num_classes` square."""
    names = [f.name for f in fields(BestEvaluation)]
    if not isinstance(best, dict) or best.keys() != set(names):
        return f"does not hold {', '.join(names)}"
    if not (isinstance(best["step"], int) and 0 < best["step"] <= step):
        return f"step {best['step']!r} is not one up to {step}"
    if not all(_is_number(best[name]) for name in ("val_balanced_accuracy", "accuracy", "balanced_accuracy")):
        return "scores are not numbers"
    confusion = best["confusion"]
    if not (isinstance(confusion, list) and len(confusion) == num_classes
            and all(isinstance(row, list) and len(row) == num_classes and all(_is_count(n) for n in row) for row in confusion)):
        return f"confusion is not {num_classes}x{num_classes} counts"
    return None


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_fraction(pair: list) -> bool:
    return len(pair) == 2 and type(pair[0]) is int and type(pair[1]) is int and pair[1] > 0
