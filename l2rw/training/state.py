"""What the training loop keeps and returns: `LoopState`, checkpointed with the model so a run
resumes mid-way; `BestEvaluation`, the test scores at the best validation evaluation; and
`FitResult`, what `l2rw.training.loop.fit` hands back."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the evaluator fills in the state: only the annotation refers back
    from l2rw.training.evaluation import Evaluation


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

    def keep_if_best(self, best: BestEvaluation, val_score: Fraction) -> None:
        """Keep `best` when its exact validation score beats the best so far (ties keep the first)."""
        so_far = self.best_val_score()
        if so_far is None or val_score > so_far:
            self.best = asdict(best)
            self.best_val_exact = [val_score.numerator, val_score.denominator]


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
