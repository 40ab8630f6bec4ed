"""The training loop: batch -> method's weighted loss -> SGD step, evaluating every `eval_every` steps."""
from __future__ import annotations

import csv
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from l2rw.data import LabeledImages, Splits
from l2rw.data.augment import random_crop_and_flip
from l2rw.errors import DivergedError, Interrupted
from l2rw.losses import LossFunction, cross_entropy, step_of
from l2rw.methods.base import Method
from l2rw.models.saved import save_weights
from l2rw.run.hardware import AMP_DTYPES
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.evaluation import Evaluator, PixelStandardizer
from l2rw.training.network import NewNetwork, apply_update
from l2rw.training.signals import DeferredInterrupt
from l2rw.training.state import METRIC_COLUMNS, BestEvaluation, FitResult, LoopState
from l2rw.training.trained_prior import TrainedPrior
from l2rw.training.weight_stats import WeightStats


@dataclass(frozen=True)
class FitOptions:
    """What `fit` reads of a run's configuration.

    `seed`: of the batch order and the augmentation. `augment`: random crop and flip of training
    batches (the meta and test images stay as they are). `amp`: autocast dtype for the step's
    forward passes (None: full precision; the backward runs outside autocast, as PyTorch
    recommends). `clip_grad_norm`: the largest L2 norm of an update's gradient (None: unclipped).
    `posthoc_tau`: evaluations predict argmax(logits - tau * log(the class prior the run trained
    on, `l2rw.training.trained_prior`)); 0: argmax. `label`: the progress bar's.
    """

    steps: int
    batch_size: int
    eval_every: int
    seed: int = 0
    progress: bool = True
    label: str = "train"
    augment: bool = False
    amp: torch.dtype | None = None
    clip_grad_norm: float | None = None
    posthoc_tau: float = 0.0

    @classmethod
    def from_config(cls, cfg: DictConfig, steps: int) -> FitOptions:
        """A run's options, for a run of `steps` steps (what `epochs` come to once the training set is known)."""
        return cls(
            steps=steps, batch_size=cfg.batch_size, eval_every=cfg.eval_every, seed=cfg.seed, progress=cfg.progress,
            label=cfg.method.name, augment=cfg.dataset.augment, amp=AMP_DTYPES[cfg.hardware.amp],
            clip_grad_norm=cfg.clip_grad_norm, posthoc_tau=cfg.posthoc_tau,
        )


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
    options: FitOptions,
    *,
    metrics_csv: Path,
    checkpoint: Checkpoint | None = None,
    example_weights_csv: Path | None = None,
    loss_fn: LossFunction = cross_entropy,
    on_evaluation: Callable[[int, dict, torch.Tensor], None] | None = None,
    first_lr_drop: int | None = None,
    new_network: NewNetwork | None = None,
    best_model_file: Path | None = None,
    standardize: PixelStandardizer | None = None,
) -> FitResult:
    """Train for `options.steps` optimizer steps; write one `metrics_csv` row per evaluation.

    `example_weights_csv`: where each training example's mean weight over the run goes (None: not
    written). `loss_fn`: the per-example loss the method weighs (`l2rw.losses`).
    `on_evaluation(step, values, example_weights)` is called after each evaluation (loggers,
    `l2rw.tracking`) with the metrics.csv row plus `recall/<class>` per class, and each training
    example's mean relative weight so far (NaN for examples no update has used yet).
    `first_lr_drop`: the step where `scheduler` first lowers the lr (None: it never drops at once),
    for methods that act on it (deferred re-weighting). `new_network`: builds a model like `model`
    with its optimizer and schedule, for a method that trains models of its own (co-teaching).
    `best_model_file`: where the model's weights go at each evaluation that beats the best
    validation score so far (None: not written; l2rw.models.saved). `standardize`: the inputs'
    standardisation (None: `PixelStandardizer.of` the training images and the model).

    Every evaluation also checks for collapse (`l2rw.training.evaluation.Evaluator`): a
    `collapsed` column in `metrics_csv`, shown on the progress bar; the returned `collapse_step` is
    where the collapse the run ends in began (None: it ends healthy).

    Resumes from `checkpoint` when it exists and saves it when due or on Ctrl-C (then raises
    Interrupted); without one, nothing is resumed or saved and Ctrl-C stops at once. Returns the
    final evaluation plus step statistics: seconds per step leave out evaluation and each
    process's first `method.warmup_steps` steps (their sum: `warmup_seconds`), unless no other
    steps ran. Raises DivergedError on a NaN/inf loss.
    """
    steps, device = options.steps, splits.train.labels.device
    generator = torch.Generator().manual_seed(options.seed)
    standardize = standardize or PixelStandardizer.of(splits.train.images, model)
    meta = LabeledImages(standardize(splits.meta.images), splits.meta.labels)
    method.setup(splits.train, meta, splits.num_classes, generator, loss_fn=loss_fn, steps=steps,
                 first_lr_drop=first_lr_drop, new_network=new_network)
    loop = LoopState(**((checkpoint.restore(model, optimizer, scheduler, method) if checkpoint else None) or {}))
    batches = method.batches(options.batch_size)
    weight_stats = WeightStats(splits.train.labels, splits.train_corrupted, splits.class_names, splits.train_paths)
    if loop.weight_stats:
        weight_stats.load_state_dict(loop.weight_stats)
    trained_prior = TrainedPrior(splits.num_classes, device, loop.trained_prior)
    evaluate = Evaluator(splits, standardize, meta, trained_prior, options.posthoc_tau)

    started = time.perf_counter() - loop.seconds
    with open(metrics_csv, "w", newline="") as metrics_file, tqdm(
        total=steps, initial=loop.step, disable=not options.progress, desc=options.label, dynamic_ncols=True
    ) as bar, DeferredInterrupt(enabled=checkpoint is not None) as interrupt:
        metrics = csv.DictWriter(metrics_file, fieldnames=METRIC_COLUMNS + weight_stats.columns)
        metrics.writeheader()
        metrics.writerows(loop.metrics)
        model.train()
        warmup_ends = loop.step + method.warmup_steps
        for step in range(loop.step + 1, steps + 1):
            step_started = time.perf_counter()
            index = next(batches).to(device)
            images = splits.train.images[index]
            if options.augment:
                images = random_crop_and_flip(images, generator)
            x, y = standardize(images), splits.train.labels[index]
            lr = optimizer.param_groups[0]["lr"]
            with step_of(loss_fn, index):
                loss, zero_share, weights = take_step(model, method, optimizer, options, x, y, index, lr, step)
            if weights is None:  # every example got weight 0: the meta gradient agrees with none of them
                loop.skipped += 1
            else:
                weight_stats.add(index, weights)
                trained_prior.add(y, weights, lr)
            advance_schedule(scheduler, skipped=weights is None)
            loop.add_step(loss, zero_share)
            bar.update(1)
            if step <= warmup_ends:
                loop.warmup_seconds += time.perf_counter() - step_started
                loop.warmed_up_steps += 1

            if step % options.eval_every == 0 or step == steps:
                eval_started = time.perf_counter()
                scores = evaluate(model, step, loop, warn=lambda message: bar.write(message, file=sys.stderr))
                if best_model_file is not None and evaluate.new_best:
                    save_weights(model, best_model_file, step, trained_prior.shares().tolist())
                window = loop.close_window()
                loop.metrics.append({
                    "step": step, "train_loss": window["train_loss"], **scores, "zero_weight_share": window["zero_weight_share"],
                    "skipped_steps": loop.skipped, "seconds": time.perf_counter() - started,
                } | weight_stats.flush())
                metrics.writerow(loop.metrics[-1])
                metrics_file.flush()
                if on_evaluation is not None:
                    on_evaluation(step, loop.metrics[-1] | evaluate.recall(), weight_stats.example_means())
                bar.set_postfix(
                    loss=f"{window['train_loss']:.3f}", bacc=f"{scores['balanced_accuracy']:.3f}",
                    **({"COLLAPSED": f"since {loop.collapse_step}"} if loop.collapse_step else {}),
                )
                loop.eval_seconds += time.perf_counter() - eval_started

            # the last step needs no checkpoint: the run is finished and writes its row
            if checkpoint and step < steps and (checkpoint.due(step) or interrupt.requested):
                loop.step, loop.seconds = step, time.perf_counter() - started
                loop.weight_stats, loop.trained_prior = weight_stats.state_dict(), trained_prior.state()
                checkpoint.save(model, optimizer, scheduler, method, asdict(loop))
                if interrupt.requested:
                    raise Interrupted(step, checkpoint.path, interrupt.signum)

    if example_weights_csv is not None:
        weight_stats.write_examples(example_weights_csv)
    return fit_result(loop, evaluate, trained_prior, steps, time.perf_counter() - started)


def take_step(
    model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, options: FitOptions,
    x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, lr: float, step: int,
) -> tuple[float, float, torch.Tensor | None]:
    """One optimizer step on the method's weighted loss. Returns the loss, the share of examples
    weighted 0, and the weights (None: all were 0, so no step was taken). Raises DivergedError on
    a NaN/inf loss."""
    with torch.autocast(x.device.type, dtype=options.amp, enabled=options.amp is not None):
        result = method.step_loss(model, x, y, index, lr)
    # everything the loop decides on, in one device-to-host copy (each one stalls a GPU)
    loss, any_weight, zero_share = torch.stack([
        result.loss.detach().float(), (result.weights.sum() > 0).float(), (result.weights == 0).float().mean()
    ]).tolist()
    if not math.isfinite(loss):
        raise DivergedError(step, loss, lr)
    if not any_weight:
        return loss, zero_share, None
    apply_update(model, optimizer, result.loss, options.clip_grad_norm)
    return loss, zero_share, result.weights


def fit_result(loop: LoopState, evaluate: Evaluator, trained_prior: TrainedPrior, steps: int, seconds: float) -> FitResult:
    """What `fit` returns after `seconds` of it: seconds per step leave out evaluation and the
    warm-up steps, unless no other steps ran (then they are the warm-up steps' pace)."""
    training_seconds = seconds - loop.eval_seconds
    steady_steps = steps - loop.warmed_up_steps
    return FitResult(
        evaluation=evaluate.test,
        val_evaluation=evaluate.val,
        best=BestEvaluation(**loop.best) if loop.best else None,
        collapse_step=loop.collapse_step,
        skipped_steps=loop.skipped,
        trained_prior=trained_prior.shares().tolist(),
        seconds_per_step=(training_seconds - loop.warmup_seconds) / steady_steps if steady_steps else training_seconds / steps,
        warmup_seconds=loop.warmup_seconds,
    )
