"""The results row, declared once: which columns a run's row has, which of them are its
configuration and which its outcome, and how each is built from the resolved config and the
`FitResult` of `l2rw.training.loop.fit`.

l2rw-train appends the row to `results_csv` (and writes it to summary.json); l2rw-report,
l2rw-select and the end-of-sweep table group runs by the configuration columns (`is_config`).
docs/outputs.md describes every column.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, ListConfig

from l2rw.training.state import BestEvaluation, FitResult

if TYPE_CHECKING:
    from l2rw.run.spec import RunSpec

# What identifies a row, assigned when the run starts
RUN_COLUMNS = ("run_id", "time", "config_hash", "run_dir")
# The configuration, flattened; besides these, one `<group>.<key>` column per option of each group below
CONFIG_COLUMNS = (
    "dataset", "model", "method", "loss", "device", "profile", "imbalance", "imbalance_ratio", "majority_class",
    "classes", "meta_per_class", "meta_add_to_train", "val_per_class", "train_size_cap", "noise_kind", "noise_rate",
    "noise_flip_to", "noise_background_class", "seed", "steps", "epochs", "lr", "batch_size", "momentum", "nesterov",
    "weight_decay", "schedule", "warmup_epochs", "lr_milestones", "lr_factors", "clip_grad_norm", "posthoc_tau",
)
OPTION_GROUPS = ("model", "method", "loss", "hardware")
# Liu et al. (2019)'s groups by training images per class, used across the long-tail literature
SHOT_GROUPS = {"many_shot_accuracy": (101, math.inf), "medium_shot_accuracy": (20, 100), "few_shot_accuracy": (0, 19)}
BEST_COLUMNS = ("best_step", "best_accuracy", "best_balanced_accuracy", *(f"best_{c}" for c in SHOT_GROUPS))
# What the data loader reports about the files it read (`Splits.provenance`)
PROVENANCE_COLUMNS = ("data_source", "data_cache_key", "skipped_images")
# Measured by the run
OUTCOME_COLUMNS = (
    "status", "diverged_step", "collapsed_step", "train_size", "train_corrupted", "meta_size", "accuracy", "balanced_accuracy",
    "val_balanced_accuracy", *SHOT_GROUPS, *BEST_COLUMNS, "per_class_recall", "trained_prior", "skipped_steps",
    "wall_seconds", "seconds_per_step", "warmup_seconds", "peak_memory_mb", *PROVENANCE_COLUMNS,
)


def is_config(column: str) -> bool:
    """Whether a results column is a configuration choice (what l2rw-report groups runs by).
    A column this version does not write (an older version's) counts as one: runs that differ
    in it are never averaged together."""
    return column not in RUN_COLUMNS and column not in OUTCOME_COLUMNS


def config_part(spec: RunSpec) -> dict:
    """The row's run and configuration columns. `config_hash` identifies the configuration (seed
    included) so reruns are recognised; keys the run does not read are empty."""
    cfg, unread = spec.cfg, spec.unread
    data = cfg.dataset

    def read(key: str, value):
        return "" if key in unread else value

    started = datetime.now(UTC).isoformat(timespec="seconds")
    digest = spec.config_hash
    values = {
        "dataset": data.name,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "loss": cfg.loss.name,
        "device": cfg.hardware.device,
        "profile": data.profile,
        "imbalance": read("imbalance", cfg.imbalance),
        "imbalance_ratio": read("imbalance_ratio", cfg.imbalance_ratio),
        "majority_class": read("dataset.majority_class", data.majority_class),
        "classes": "" if data.classes is None else " ".join(map(str, data.classes)),
        "meta_per_class": cfg.meta.per_class,
        "meta_add_to_train": cfg.meta.add_to_train,
        "val_per_class": data.val_per_class,
        "train_size_cap": data.train_size if data.train_size is not None else "",
        "noise_kind": cfg.noise.kind,
        "noise_rate": cfg.noise.rate,
        "noise_flip_to": read("noise.flip_to", " ".join(map(str, cfg.noise.flip_to or []))),
        "noise_background_class": read("noise.background_class", cfg.noise.background_class),
        "seed": cfg.seed,
        "steps": cfg.steps,  # with `epochs`, train fills in the steps they come to
        "epochs": "" if cfg.epochs is None else cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "momentum": cfg.momentum,
        "nesterov": cfg.nesterov,
        "weight_decay": cfg.weight_decay,
        "schedule": cfg.schedule,
        "warmup_epochs": cfg.warmup_epochs,
        "lr_milestones": read("lr_milestones", " ".join(map(str, cfg.lr_milestones))),
        "lr_factors": read("lr_factors", " ".join(map(str, cfg.lr_factors))),
        "clip_grad_norm": "" if cfg.clip_grad_norm is None else cfg.clip_grad_norm,
        "posthoc_tau": cfg.posthoc_tau,
    }
    assert tuple(values) == CONFIG_COLUMNS, "config_part and CONFIG_COLUMNS list the same columns, in one order"
    return {
        "run_id": f"{started[:19].replace(':', '')}-{digest[:8]}",
        "time": started,
        **values,
        **option_columns(cfg),
        "config_hash": digest,
        "run_dir": str(spec.run_dir),
    }


def option_columns(cfg: DictConfig) -> dict:
    """`<group>.<key>` for every option of the model, method, loss and hardware choices."""
    columns = {}
    for group in OPTION_GROUPS:
        for key, value in cfg[group].items():
            if key not in ("name", "_target_", "device"):  # `device` has its own column
                columns[f"{group}.{key}"] = " ".join(map(str, value)) if isinstance(value, ListConfig) else value
    return columns


def outcome_part(result: FitResult, train_counts: torch.Tensor, *, train_size: int, train_corrupted: int, meta_size: int,
                 provenance: dict, wall_seconds: float, peak_memory_mb: float) -> dict:
    """The row's outcome columns of a run that finished."""
    last, val = result.evaluation, result.val_evaluation
    outcome = {
        "status": "ok",
        "diverged_step": "",
        "collapsed_step": result.collapse_step or "",
        "train_size": train_size,
        "train_corrupted": train_corrupted,
        "meta_size": meta_size,
        "accuracy": round(last.accuracy, 6),
        "balanced_accuracy": round(last.balanced_accuracy, 6),
        "val_balanced_accuracy": round(val.balanced_accuracy, 6) if val else "",
        **shot_accuracies(last.confusion, train_counts),
        **best_columns(result.best, train_counts),
        "per_class_recall": " ".join(f"{r:.4f}" for r in last.per_class_recall),
        "trained_prior": " ".join(f"{share:.4f}" for share in result.trained_prior),
        "skipped_steps": result.skipped_steps,
        "wall_seconds": round(wall_seconds, 3),
        "seconds_per_step": round(result.seconds_per_step, 6),
        "warmup_seconds": round(result.warmup_seconds, 3),
        "peak_memory_mb": round(peak_memory_mb, 1),
        **provenance_columns(provenance),
    }
    assert tuple(outcome) == OUTCOME_COLUMNS, "outcome_part and OUTCOME_COLUMNS list the same columns, in one order"
    return outcome


def diverged_part(step: int) -> dict:
    """The row's outcome of a run stopped by a non-finite loss: the rest stays empty."""
    return {"status": "diverged", "diverged_step": step}


def provenance_columns(provenance: dict) -> dict:
    unknown = set(provenance) - set(PROVENANCE_COLUMNS)
    assert not unknown, f"a data loader reported {unknown}, which PROVENANCE_COLUMNS does not declare"
    return {column: provenance.get(column, "") for column in PROVENANCE_COLUMNS}


def shot_accuracies(confusion: torch.Tensor, train_counts: torch.Tensor) -> dict[str, float | str]:
    """Test accuracy over the classes with > 100, 20-100 and < 20 training images; empty for a
    group with no class (or no test image)."""
    correct, support = confusion.diag(), confusion.sum(1)
    columns = {}
    for column, (low, high) in SHOT_GROUPS.items():
        group = (train_counts >= low) & (train_counts <= high)
        total = support[group].sum().item()
        columns[column] = round(correct[group].sum().item() / total, 6) if total else ""
    return columns


def best_columns(best: BestEvaluation | None, train_counts: torch.Tensor) -> dict[str, float | int | str]:
    """The test scores at the best validation evaluation ("best", beside the last evaluation's);
    empty without a validation split."""
    if best is None:
        return dict.fromkeys(BEST_COLUMNS, "")
    shots = shot_accuracies(torch.tensor(best.confusion), train_counts)
    return {
        "best_step": best.step,
        "best_accuracy": round(best.accuracy, 6),
        "best_balanced_accuracy": round(best.balanced_accuracy, 6),
        **{f"best_{column}": value for column, value in shots.items()},
    }
