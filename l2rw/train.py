"""l2rw-train: one run (or a --multirun sweep) of a method on an imbalanced dataset.

    l2rw-train                                         # digits, LeNet, plain SGD
    l2rw-train method=l2rw imbalance=0.9
    l2rw-train method=l2rw dataset.profile=longtail imbalance_ratio=100
    l2rw-train --multirun method=sgd,weighted_sampler,l2rw imbalance=0.5,0.7,0.9 seed=0,1,2

Each run writes config.yaml, metrics.csv, confusion.csv, confusion.png, per_class_recall.csv and
summary.json into its run dir and appends one row to `results_csv`.
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from l2rw.checkpoint import Checkpoint
from l2rw.config_schema import check_config
from l2rw.confusion_plot import save_confusion_png
from l2rw.data import build_splits
from l2rw.data.augment import random_crop_and_flip
from l2rw.errors import DivergedError, Interrupted, UserError
from l2rw.instantiation import build
from l2rw.machine import threads_per_job
from l2rw.models import build_model
from l2rw.results import append_row, check_results_csv, finished_row
from l2rw.run_identity import config_hash, unread_keys
from l2rw.training_loop import BestEvaluation, Evaluation, fit

AMP_DTYPES = {None: None, "bf16": torch.bfloat16}
# An absolute path, so the configs are found whatever folder l2rw-train is started from.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def place_model(model: torch.nn.Module, hardware: DictConfig, device: torch.device) -> torch.nn.Module:
    """The model on `device`, in the hardware config's memory layout, compiled if asked."""
    model = model.to(device)
    if hardware.channels_last:
        # convolution weights in NHWC make every activation after them NHWC too (inputs may stay NCHW)
        model = model.to(memory_format=torch.channels_last)
    if hardware.compile:
        model = torch.compile(model)  # shares the parameters; `reweight` compiles its own functions of the eager module
    return model


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run one configuration; write the run dir files and append one results row. Returns the row
    (with `skip_done`, the finished row already in `results_csv` instead of running again)."""
    results_csv = validate(cfg, Path(run_dir))
    device = resolve_device(cfg.hardware.device)  # an unusable device stops the run before anything is written
    row = config_columns(cfg) | {"run_dir": str(run_dir)}
    if cfg.skip_done and (done := finished_row(results_csv, row["config_hash"])):
        print(f"skipped: config_hash {row['config_hash']} already finished in {results_csv} "
              f"(run dir {done['run_dir']}); skip_done=false runs it again")
        return done
    run_dir = Path(run_dir)
    checkpoint = Checkpoint(run_dir, cfg.checkpoint_every, row["config_hash"], steps=cfg.steps)
    checkpoint.check_compatible()  # one this run cannot resume stops it before its config.yaml is overwritten
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(cfg.seed)
    splits = build_splits(cfg).to(device)
    model = place_model(build_model(cfg.model, splits.image_shape, splits.num_classes), cfg.hardware, device)
    method = build(cfg.method)
    class_counts = torch.bincount(splits.train.labels, minlength=splits.num_classes)  # as the model sees them
    loss_fn = build(cfg.loss, class_counts=class_counts)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.steps)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    try:
        outcome = fit(
            model, method, splits, optimizer, scheduler,
            steps=cfg.steps, batch_size=cfg.batch_size, eval_every=cfg.eval_every,
            generator=torch.Generator().manual_seed(cfg.seed),
            metrics_csv=run_dir / "metrics.csv", checkpoint=checkpoint,
            progress=cfg.progress, label=cfg.method.name,
            augment=random_crop_and_flip if cfg.dataset.augment else None,
            amp=AMP_DTYPES[cfg.hardware.amp],
            clip_grad_norm=cfg.clip_grad_norm,
            example_weights_csv=run_dir / "example_weights.csv",
            loss_fn=loss_fn,
            posthoc_tau=cfg.posthoc_tau,
        )
    except DivergedError as diverged:
        append_row(results_csv, row | {"status": "diverged", "diverged_step": diverged.step})
        checkpoint.path.unlink(missing_ok=True)  # resuming would only diverge again
        raise

    evaluation, val_evaluation, best = outcome.evaluation, outcome.val_evaluation, outcome.best
    train_counts = class_counts.cpu()
    row |= {
        "status": "ok",
        "diverged_step": "",
        "collapsed_step": outcome.collapse_step or "",
        "train_size": len(splits.train),
        "train_corrupted": int(splits.train_corrupted.sum()),
        "accuracy": round(evaluation.accuracy, 6),
        "balanced_accuracy": round(evaluation.balanced_accuracy, 6),
        "val_balanced_accuracy": round(val_evaluation.balanced_accuracy, 6) if val_evaluation else "",
        **shot_accuracies(evaluation.confusion, train_counts),
        **best_columns(best, train_counts),
        "per_class_recall": " ".join(f"{r:.4f}" for r in evaluation.per_class_recall),
        "trained_prior": " ".join(f"{share:.4f}" for share in outcome.trained_prior),
        "skipped_steps": outcome.skipped_steps,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "seconds_per_step": round(outcome.seconds_per_step, 6),
        "warmup_seconds": round(outcome.warmup_seconds, 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    write_confusion(run_dir / "confusion.csv", evaluation.confusion, splits.class_names)
    write_per_class_recall(run_dir / "per_class_recall.csv", evaluation, splits.class_names)
    title = f"{row['dataset']} {row['model']} {row['method']}: balanced accuracy {evaluation.balanced_accuracy:.2%}"
    save_confusion_png(run_dir / "confusion.png", evaluation.confusion, splits.class_names, title)
    (run_dir / "summary.json").write_text(json.dumps(row | {"class_names": splits.class_names}, indent=2))
    append_row(results_csv, row)
    checkpoint.path.unlink(missing_ok=True)  # the row says the run is done; nothing to resume
    if outcome.collapse_step:
        print(f"warning: this run ended collapsed (since step {outcome.collapse_step}): its model predicts "
              f"(nearly) one class or uniform outputs; see {run_dir / 'metrics.csv'}. Collapsed after learning: "
              "lower lr or momentum; never learned: train longer", file=sys.stderr)
    print(f"done: balanced accuracy {row['balanced_accuracy']:.4f}, accuracy {row['accuracy']:.4f}; "
          f"run dir {run_dir}; row appended to {results_csv}")
    return row


# Liu et al. (2019)'s groups by training images per class, used across the long-tail literature
SHOT_GROUPS = {"many_shot_accuracy": (101, math.inf), "medium_shot_accuracy": (20, 100), "few_shot_accuracy": (0, 19)}


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
        return dict.fromkeys(["best_step", "best_accuracy", "best_balanced_accuracy", *(f"best_{c}" for c in SHOT_GROUPS)], "")
    shots = shot_accuracies(torch.tensor(best.confusion), train_counts)
    return {
        "best_step": best.step,
        "best_accuracy": round(best.accuracy, 6),
        "best_balanced_accuracy": round(best.balanced_accuracy, 6),
        **{f"best_{column}": value for column, value in shots.items()},
    }


# What a run writes into its run dir: no results_csv may be one of them
RUN_FILES = ("config.yaml", "metrics.csv", "example_weights.csv", "confusion.csv", "confusion.png",
             "per_class_recall.csv", "summary.json", "checkpoint.pt")


def validate(cfg: DictConfig, run_dir: Path) -> Path:
    """Reject mistyped or out-of-range values (l2rw.config_schema), and a results_csv that cannot
    take the run's row or is a file the run itself writes, before anything is loaded or written.
    Returns results_csv with `~` expanded."""
    check_config(cfg)
    results_csv = Path(cfg.results_csv).expanduser()
    if not cfg.results_csv:
        raise UserError("results_csv is empty; give the path of a file, e.g. results_csv=outputs/results.csv")
    if results_csv.resolve().parent == run_dir.resolve() and results_csv.name in RUN_FILES:
        raise UserError(f"results_csv={cfg.results_csv} is the run's own {results_csv.name}; choose a path outside "
                        "the run dir, e.g. results_csv=outputs/results.csv")
    check_results_csv(results_csv)
    return results_csv


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name) if isinstance(name, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # the two the code is tested on
        raise UserError(f"hardware.device={name!r} is unknown; use hardware=cpu or hardware=cuda (or hardware.device=cuda:N)")
    if device.type == "cpu" and device.index is not None:
        raise UserError(f"hardware.device={name} names a CPU by number; there is one CPU device: use hardware.device=cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("hardware=cuda was asked for, but this machine has no usable CUDA GPU; use hardware=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"hardware.device={name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if schedule == "step":
        milestones = [int(steps * 0.5), int(steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def config_columns(cfg: DictConfig) -> dict:
    """The choices that define a run, flattened for the results CSV; `config_hash` identifies
    them (seed included) so reruns of the same configuration can be recognised."""
    data = cfg.dataset
    unread = unread_keys(cfg)
    columns = {
        "run_id": "",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": data.name,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "loss": cfg.loss.name,
        "device": cfg.hardware.device,
        "profile": data.profile,
        "imbalance": "" if "imbalance" in unread else cfg.imbalance,
        "imbalance_ratio": "" if "imbalance_ratio" in unread else cfg.imbalance_ratio,
        "majority_class": "" if "dataset.majority_class" in unread else data.majority_class,
        "classes": "" if data.classes is None else " ".join(map(str, data.classes)),
        "meta_per_class": cfg.meta.per_class,
        "meta_add_to_train": cfg.meta.add_to_train,
        "val_per_class": data.val_per_class,
        "train_size_cap": data.train_size if data.train_size is not None else "",
        **noise_columns(cfg.noise, unread),
        "seed": cfg.seed,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "schedule": cfg.schedule,
        "clip_grad_norm": "" if cfg.clip_grad_norm is None else cfg.clip_grad_norm,
        "posthoc_tau": cfg.posthoc_tau,
    }
    for group in ("model", "method", "loss"):
        for key, value in cfg[group].items():
            if key not in ("name", "_target_"):
                columns[f"{group}.{key}"] = " ".join(map(str, value)) if isinstance(value, ListConfig) else value
    for key, value in cfg.hardware.items():
        if key != "device":
            columns[f"hardware.{key}"] = value
    columns["config_hash"] = config_hash(cfg)
    columns["run_id"] = f"{columns['time'][:19].replace(':', '')}-{columns['config_hash'][:8]}"
    return columns


def noise_columns(noise: DictConfig, unread: set[str]) -> dict:
    """The noise settings; the kind-specific ones stay empty when the run does not read them."""
    return {
        "noise_kind": noise.kind,
        "noise_rate": noise.rate,
        "noise_flip_to": "" if "noise.flip_to" in unread else " ".join(map(str, noise.flip_to or [])),
        "noise_background_class": "" if "noise.background_class" in unread else noise.background_class,
    }


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_confusion(path: Path, confusion: torch.Tensor, class_names: list[str]) -> None:
    lines = ["true\\predicted," + ",".join(class_names)]
    lines += [f"{name}," + ",".join(map(str, row)) for name, row in zip(class_names, confusion.tolist())]
    path.write_text("\n".join(lines) + "\n")


def write_per_class_recall(path: Path, evaluation: Evaluation, class_names: list[str]) -> None:
    """Test images and recall per class; balanced accuracy is the mean recall over classes with images."""
    support = evaluation.confusion.sum(1).tolist()
    lines = ["class,support,recall"]
    lines += [f"{name},{n},{r:.6f}" for name, n, r in zip(class_names, support, evaluation.per_class_recall)]
    path.write_text("\n".join(lines) + "\n")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    """One job: its results row is Hydra's return value (a sweeper reads its validation score there)."""
    if cfg.threads is None:
        cfg.threads = threads_per_job(HydraConfig.get().launcher)
    try:
        return train(cfg, HydraConfig.get().runtime.output_dir)
    except Interrupted as interrupted:
        print(interrupted, file=sys.stderr)
        sys.exit(interrupted.exit_code)  # the shell's code for the signal: 130 Ctrl-C, 143 SIGTERM, 140 SIGUSR2
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except DivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on; its row says `diverged`
            sys.exit(1)
        return None


def cli() -> None:
    """`l2rw-train`: `main`, with Ctrl-C before training started (while Hydra composes, or while
    the data loads) as one line and the shell's exit code instead of a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
