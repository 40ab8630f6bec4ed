"""The training loop: batch -> method's weighted loss -> SGD step, evaluating every `eval_every` steps."""
from __future__ import annotations

import csv
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from l2rw.data import LabeledImages, Splits
from l2rw.errors import DivergedError, Interrupted
from l2rw.losses import LossFunction, cross_entropy
from l2rw.methods.base import Method
from l2rw.training.checkpoint import Checkpoint, DeferredInterrupt
from l2rw.training.trained_prior import TrainedPrior
from l2rw.training.weight_stats import WeightStats


class PixelStandardizer:
    """uint8 images -> float, standardised per channel with the training set's statistics."""

    def __init__(self, train_images: torch.Tensor):
        pixels = train_images.float().div(255).transpose(0, 1).flatten(1)
        self.mean = pixels.mean(dim=1).view(1, -1, 1, 1)
        self.std = pixels.std(dim=1).clamp(min=1e-3).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div(255) - self.mean) / self.std


@dataclass
class Evaluation:
    accuracy: float
    balanced_accuracy: float
    per_class_recall: list[float]
    confusion: torch.Tensor  # (true class, predicted class) counts
    mean_confidence: float = 1.0  # mean over images of the highest softmax probability: 1/K for uniform outputs

    @property
    def top_class(self) -> tuple[int, float]:
        """The most predicted class and its share of all predictions."""
        predicted = self.confusion.sum(0)
        top = int(predicted.argmax())
        return top, predicted[top].item() / max(predicted.sum().item(), 1)


# A model that gives one class this share of its test predictions has collapsed (a healthy model on
# a balanced test set gives each class about 1/K), as has one whose outputs are uniform, whatever
# its argmax says: its mean top softmax probability is within COLLAPSE_UNIFORM_MARGIN of 1/K. The
# outputs themselves are tested, not the loss: a model confidently right on some classes and wrong
# on others can have a loss near ln K too.
COLLAPSE_TOP_SHARE = 0.9
COLLAPSE_UNIFORM_MARGIN = 0.05


def collapse_symptom(evaluation: Evaluation, class_names: list[str]) -> str | None:
    """Why this evaluation looks collapsed, in words; None when it does not."""
    top, share = evaluation.top_class
    uniform = 1 / len(class_names)
    if share >= COLLAPSE_TOP_SHARE and len(class_names) > 1:
        return f"{share:.0%} of test images are predicted as class {class_names[top]!r}"
    if evaluation.mean_confidence <= uniform * (1 + COLLAPSE_UNIFORM_MARGIN):
        return (f"the mean top probability is {evaluation.mean_confidence:.3f}, 1/K = {uniform:.3f}: "
                "the outputs are uniform")
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module, data: LabeledImages, standardize: PixelStandardizer, num_classes: int, adjustment: torch.Tensor | None = None
) -> Evaluation:
    """Accuracy, balanced accuracy (mean per-class recall, ISIC 2018's metric) and the confusion
    matrix; `adjustment` (one value per class) is added to the logits before the argmax."""
    was_training = model.training
    model.eval()
    shift = 0 if adjustment is None else adjustment
    predictions, confidence = [], 0.0
    for i in range(0, len(data), 1000):
        logits = model(standardize(data.images[i : i + 1000])).float()
        predictions.append((logits + shift).argmax(1))
        confidence += logits.softmax(1).amax(1).sum()
    predictions = torch.cat(predictions)
    model.train(was_training)
    confusion = torch.bincount(
        data.labels * num_classes + predictions, minlength=num_classes * num_classes
    ).view(num_classes, num_classes).cpu()
    support = confusion.sum(1)
    recall = confusion.diag().double() / support.clamp(min=1)
    present = support > 0
    return Evaluation(
        accuracy=confusion.diag().sum().item() / max(len(data), 1),
        balanced_accuracy=recall[present].mean().item(),
        per_class_recall=recall.tolist(),
        confusion=confusion,
        mean_confidence=float(confidence) / max(len(data), 1),
    )


def exact_balanced_accuracy(confusion: torch.Tensor) -> Fraction:
    """Balanced accuracy as an exact fraction of the counts. The float mean rounds differently
    depending on which classes are right (29/50 comes out as 0.58 or 0.5800000000000001), so
    equal scores would compare unequal."""
    recalls = [Fraction(correct, support) for correct, support in zip(confusion.diag().tolist(), confusion.sum(1).tolist()) if support]
    return sum(recalls, Fraction(0)) / max(len(recalls), 1)


@torch.no_grad()
def mean_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    loss = F.cross_entropy(model(images), labels).item()
    model.train(was_training)
    return loss


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


def best_val_score(loop: LoopState) -> Fraction:
    """The exact validation score of `loop.best`; the float's own value for a checkpoint saved
    before the exact one was kept."""
    if loop.best_val_exact is None:
        return Fraction(loop.best["val_balanced_accuracy"])
    return Fraction(*loop.best_val_exact)


def advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, skipped: bool) -> None:
    """One step of the lr schedule, skipped steps included: the schedule counts steps, not updates.
    torch warns when the schedule moves before any optimizer.step(), which a skipped first step
    does on purpose."""
    if not skipped:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before", category=UserWarning)
        scheduler.step()


def fit(
    model: nn.Module,
    method: Method,
    splits: Splits,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    generator: torch.Generator,
    metrics_csv: Path,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
    label: str = "train",
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    amp: torch.dtype | None = None,
    clip_grad_norm: float | None = None,
    example_weights_csv: Path | None = None,
    loss_fn: LossFunction = cross_entropy,
    posthoc_tau: float = 0.0,
    on_evaluation: Callable[[int, dict, torch.Tensor], None] | None = None,
    first_lr_drop: int | None = None,
) -> FitResult:
    """Train for `steps` optimizer steps; write one `metrics_csv` row per evaluation.

    `augment(uint8 images, generator)` transforms training batches only: the meta and test
    images stay as they are. `amp`: autocast dtype for the step's forward passes (None: full
    precision); the backward runs outside autocast, as PyTorch recommends. `clip_grad_norm`: the
    largest L2 norm of an update's gradient (None: unclipped). `example_weights_csv`: where each
    training example's mean weight over the run goes (None: not written). `loss_fn`: the
    per-example loss the method weighs (`l2rw.losses`). `posthoc_tau`: evaluations predict
    argmax(logits - tau * log(the class prior the run trained on), `l2rw.training.trained_prior`); 0: argmax.
    `on_evaluation(step, values, example_weights)` is called after each evaluation (loggers,
    `l2rw.tracking`) with the metrics.csv row plus `recall/<class>` per class, and each training
    example's mean relative weight so far (NaN for examples no update has used yet).
    `first_lr_drop`: the step where `scheduler` first lowers the lr (None: it never drops at once),
    for methods that act on it (deferred re-weighting).

    Every evaluation also checks for collapse (one class predicted for nearly all test images, or
    uniform outputs): it is a `collapsed` column in `metrics_csv` and shown on the progress bar;
    a collapse after a healthy evaluation is warned about on stderr when it starts (before one, the
    model may simply not have learned yet). The returned `collapse_step` is where the collapse the
    run ends in began (None: it ends healthy).

    Resumes from `checkpoint` when it exists and saves it when due or on Ctrl-C (then raises
    Interrupted); without one, nothing is resumed or saved and Ctrl-C stops at once. Returns the
    final evaluation plus step statistics: seconds per step leave out evaluation and each
    process's first `method.warmup_steps` steps (their sum: `warmup_seconds`), unless no other
    steps ran. Raises DivergedError on a NaN/inf loss.
    """
    standardize = PixelStandardizer(splits.train.images)
    meta = LabeledImages(standardize(splits.meta.images), splits.meta.labels)
    method.setup(splits.train, meta, splits.num_classes, generator, loss_fn=loss_fn, steps=steps, first_lr_drop=first_lr_drop)
    saved = checkpoint.restore(model, optimizer, scheduler, method) if checkpoint else None
    loop = LoopState(**(saved or {}))
    batches = method.batches(batch_size)
    device = splits.train.labels.device
    weight_stats = WeightStats(splits.train.labels, splits.train_corrupted, splits.class_names)
    if loop.weight_stats:
        weight_stats.load_state_dict(loop.weight_stats)
    trained_prior = TrainedPrior(splits.num_classes, device, loop.trained_prior)

    started = time.perf_counter() - loop.seconds
    with open(metrics_csv, "w", newline="") as metrics_file, tqdm(
        total=steps, initial=loop.step, disable=not progress, desc=label, dynamic_ncols=True
    ) as bar, DeferredInterrupt(enabled=checkpoint is not None) as interrupt:
        writer = csv.DictWriter(metrics_file, fieldnames=METRIC_COLUMNS + weight_stats.columns)
        writer.writeheader()
        writer.writerows(loop.metrics)
        model.train()
        warmup_ends = loop.step + method.warmup_steps
        for step in range(loop.step + 1, steps + 1):
            step_started = time.perf_counter()
            index = next(batches).to(device)
            images = splits.train.images[index]
            if augment is not None:
                images = augment(images, generator)
            x, y = standardize(images), splits.train.labels[index]
            lr = optimizer.param_groups[0]["lr"]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                result = method.step_loss(model, x, y, index, lr)
            # everything the loop decides on, in one device-to-host copy (each one stalls a GPU)
            loss, any_weight, zero_share = torch.stack([
                result.loss.detach().float(), (result.weights.sum() > 0).float(), (result.weights == 0).float().mean()
            ]).tolist()
            if not math.isfinite(loss):
                raise DivergedError(step, loss, lr)
            if any_weight:
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
                weight_stats.add(index, result.weights)
                trained_prior.add(y, result.weights, lr)
            else:  # every example got weight 0: the meta gradient agrees with none of them
                loop.skipped += 1
            advance_schedule(scheduler, skipped=not any_weight)
            loop.window_loss += loss
            loop.window_zero_share += zero_share
            loop.window_steps += 1
            bar.update(1)
            if step <= warmup_ends:
                loop.warmup_seconds += time.perf_counter() - step_started
                loop.warmed_up_steps += 1

            if step % eval_every == 0 or step == steps:
                eval_started = time.perf_counter()
                adjustment = trained_prior.adjustment(posthoc_tau)
                evaluation = evaluate(model, splits.test, standardize, splits.num_classes, adjustment)
                val_evaluation = None if splits.val is None else evaluate(model, splits.val, standardize, splits.num_classes, adjustment)
                meta_loss = mean_loss(model, meta.images, meta.labels)
                val_score = None if val_evaluation is None else exact_balanced_accuracy(val_evaluation.confusion)
                if val_score is not None and (loop.best is None or val_score > best_val_score(loop)):
                    loop.best = asdict(BestEvaluation(
                        step, val_evaluation.balanced_accuracy, evaluation.accuracy, evaluation.balanced_accuracy,
                        evaluation.confusion.tolist(),
                    ))
                    loop.best_val_exact = [val_score.numerator, val_score.denominator]
                symptom = collapse_symptom(evaluation, splits.class_names)
                if symptom is None:
                    loop.collapse_step = None
                elif loop.collapse_step is None:
                    loop.collapse_step = step
                    if any(not row["collapsed"] for row in loop.metrics):  # not a model that has yet to learn
                        bar.write(f"warning: collapsed at step {step}: {symptom}", file=sys.stderr)
                loop.metrics.append({
                    "step": step,
                    "train_loss": loop.window_loss / loop.window_steps,
                    "meta_loss": meta_loss,
                    "accuracy": evaluation.accuracy,
                    "balanced_accuracy": evaluation.balanced_accuracy,
                    "val_balanced_accuracy": val_evaluation.balanced_accuracy if val_evaluation else "",
                    "top_class_share": evaluation.top_class[1],
                    "collapsed": int(symptom is not None),
                    "zero_weight_share": loop.window_zero_share / loop.window_steps,
                    "skipped_steps": loop.skipped,
                    "seconds": time.perf_counter() - started,
                } | weight_stats.flush())
                writer.writerow(loop.metrics[-1])
                metrics_file.flush()
                if on_evaluation is not None:
                    recall = {f"recall/{name}": r for name, r in zip(splits.class_names, evaluation.per_class_recall)}
                    on_evaluation(step, loop.metrics[-1] | recall, weight_stats.example_means())
                bar.set_postfix(
                    loss=f"{loop.window_loss / loop.window_steps:.3f}", bacc=f"{evaluation.balanced_accuracy:.3f}",
                    **({"COLLAPSED": f"since {loop.collapse_step}"} if loop.collapse_step else {}),
                )
                loop.window_loss, loop.window_zero_share, loop.window_steps = 0.0, 0.0, 0
                loop.eval_seconds += time.perf_counter() - eval_started

            # the last step needs no checkpoint: the run is finished and writes its row
            if checkpoint and step < steps and (checkpoint.due(step) or interrupt.requested):
                loop.step, loop.seconds = step, time.perf_counter() - started
                loop.weight_stats = weight_stats.state_dict()
                loop.trained_prior = trained_prior.state()
                checkpoint.save(model, optimizer, scheduler, method, asdict(loop))
                if interrupt.requested:
                    raise Interrupted(step, checkpoint.path, interrupt.signum)

    if example_weights_csv is not None:
        weight_stats.write_examples(example_weights_csv)
    training_seconds = time.perf_counter() - started - loop.eval_seconds
    steady_steps = steps - loop.warmed_up_steps
    return FitResult(
        evaluation=evaluation,
        val_evaluation=val_evaluation,
        best=BestEvaluation(**loop.best) if loop.best else None,
        collapse_step=loop.collapse_step,
        skipped_steps=loop.skipped,
        trained_prior=trained_prior.shares().tolist(),
        # a run too short to have steady steps gets the pace of its warm-up steps
        seconds_per_step=(training_seconds - loop.warmup_seconds) / steady_steps if steady_steps else training_seconds / steps,
        warmup_seconds=loop.warmup_seconds,
    )
