"""l2rw-train: one run (or a --multirun sweep) of a method on an imbalanced dataset.

    l2rw-train                                         # digits, LeNet, plain SGD
    l2rw-train method=l2rw imbalance=0.9
    l2rw-train method=l2rw dataset.profile=longtail imbalance_ratio=100
    l2rw-train --multirun method=sgd,weighted_sampler,l2rw imbalance=0.5,0.7,0.9 seed=0,1,2

Each run writes its files into its run dir (docs/outputs.md lists them) and appends one row to
`results_csv`; docs/architecture.md follows a run through the packages.
"""
from __future__ import annotations

import copy
import sys
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from l2rw.data import Splits, build_splits
from l2rw.errors import DivergedError, Interrupted, StoppedAtOnce, UserError, shown
from l2rw.losses import LossFunction
from l2rw.methods.base import Method
from l2rw.models import allocation_request, build_model, is_out_of_memory, sizes_the_model
from l2rw.models.saved import BEST, FINAL, ModelCard, forget_models, save_weights, saved_step, write_card
from l2rw.results import row as results_row
from l2rw.results.run_files import EXAMPLE_WEIGHTS, METRICS, write_run_files, write_skipped_images
from l2rw.results.table import append_row, finished_row
from l2rw.run import CONFIG_DIR
from l2rw.run.compose_errors import refuse_composition_mistakes
from l2rw.run.hardware import peak_memory_mb, place_model, resolve_device
from l2rw.run.instantiation import build
from l2rw.run.machine import threads_per_job
from l2rw.run.spec import validate
from l2rw.run.trial_pruning import TrialPruned
from l2rw.tracking import RunLoggers
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.evaluation import PixelStandardizer
from l2rw.training.loop import fit
from l2rw.training.network import Network, NewNetwork
from l2rw.training.optimization import LrSchedule, lr_schedule, make_optimizer, make_scheduler, steps_per_epoch
from l2rw.training.signals import stopping_at_once


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run one configuration; write the run dir files and append one results row. Returns the row
    (with `skip_done`, the finished row already in `results_csv` instead of running again)."""
    spec = validate(cfg, run_dir)
    device = resolve_device(cfg.hardware.device)  # an unusable device stops the run before anything is written
    row = results_row.config_part(spec)
    if cfg.skip_done and (done := finished_row(spec.results_csv, spec.config_hash)):
        print(f"skipped: config_hash {spec.config_hash} already finished in {spec.results_csv} "
              f"(run dir {done['run_dir']}); skip_done=false runs it again")
        return done
    run_dir = spec.run_dir
    loggers = RunLoggers.from_config(cfg)  # logger=...: a missing optional package stops the run here, before anything is written
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()

    torch.manual_seed(cfg.seed)
    splits = build_splits(cfg).to(device)
    options = spec.fit_options(len(splits.train))
    row["steps"] = options.steps
    checkpoint = Checkpoint(run_dir, cfg.checkpoint_every, spec.config_hash, steps=options.steps)
    checkpoint.load()  # one this run cannot resume stops it before its config.yaml is overwritten
    run_dir.mkdir(parents=True, exist_ok=True)
    model, loss_fn, optimizer, class_counts = build_learner(cfg, splits, device)
    schedule = lr_schedule(cfg, options.steps, steps_per_epoch(len(splits.train), cfg.batch_size))
    scheduler = make_scheduler(optimizer, schedule)
    new_network = partial(build_network, cfg, splits, device, schedule)
    method = build(cfg.method)
    standardize = PixelStandardizer.of(splits.train.images, model)
    method.check_model(model, standardize(splits.train.images[:2]))
    method_as_set_up = set_up_copy(method, cfg.method, splits, loss_fn, new_network)
    # a crafted one stops the run before config.yaml too
    checkpoint.check_fits(model, optimizer, scheduler, method_as_set_up, splits)
    del method_as_set_up  # what it built for itself (co-teaching's second network) must not stay in memory
    # with `epochs`, the steps they came to: config.yaml holds what the run trained
    OmegaConf.save(OmegaConf.merge(cfg, {"steps": options.steps}), run_dir / "config.yaml", resolve=True)
    write_skipped_images(run_dir, splits.skipped_files)
    if not checkpoint.path.exists():
        forget_models(run_dir)
    with loggers.watching(run_dir, spec.values):
        try:
            result = fit(
                model, method, splits, optimizer, scheduler, options,
                metrics_csv=run_dir / METRICS, checkpoint=checkpoint, example_weights_csv=run_dir / EXAMPLE_WEIGHTS,
                loss_fn=loss_fn, on_evaluation=loggers.log_evaluation, first_lr_drop=schedule.first_drop,
                new_network=new_network, best_model_file=run_dir / BEST if splits.val is not None else None,
                standardize=standardize,
            )
        except DivergedError as diverged:
            append_row(spec.results_csv, row | results_row.diverged_part(diverged.step))
            checkpoint.path.unlink(missing_ok=True)  # resuming would only diverge again
            raise

        row |= results_row.outcome_part(
            result, class_counts.cpu(), train_size=len(splits.train), train_corrupted=int(splits.train_corrupted.sum()),
            meta_size=len(splits.meta),
            provenance=splits.provenance, wall_seconds=time.perf_counter() - started, peak_memory_mb=peak_memory_mb(device),
        )
        write_run_files(run_dir, row, result.evaluation, splits.class_names)
        save_weights(model, run_dir / FINAL)
        keep_best_of_this_run(run_dir / BEST, result.best)
        write_card(run_dir, ModelCard.of_run(cfg.model, splits.image_shape, splits.class_names, standardize,
                                             result.trained_prior, cfg.posthoc_tau))
        append_row(spec.results_csv, row)
        checkpoint.path.unlink(missing_ok=True)  # the row says the run is done; nothing to resume
        loggers.finish(row, run_dir)
    if result.collapse_step:
        print(f"warning: this run ended collapsed (since step {result.collapse_step}): its model predicts "
              f"(nearly) one class or uniform outputs; see {run_dir / METRICS}. Collapsed after learning: "
              "lower lr or momentum; never learned: train longer", file=sys.stderr)
    print(f"done: balanced accuracy {row['balanced_accuracy']:.4f}, accuracy {row['accuracy']:.4f}; "
          f"run dir {run_dir}; row appended to {spec.results_csv}")
    return row


def keep_best_of_this_run(path: Path, best) -> None:
    """The best model's file is written at each new best, the checkpoint only every so often: after
    a hard kill and a resume that did not repeat the same evaluations (a GPU's kernels need not be
    bit-reproducible), it may be of a best this run no longer has. It is then removed, and said so."""
    if path.exists() and (best is None or saved_step(path) != best.step):
        path.unlink()
        print(f"warning: {path.name} was of an evaluation this resumed run no longer has; it is removed "
              "(model.safetensors is the final model)", file=sys.stderr)


class Learner(NamedTuple):
    model: torch.nn.Module
    loss_fn: LossFunction
    optimizer: torch.optim.Optimizer
    class_counts: torch.Tensor  # training images per class, as the model sees them (after noise)


def build_learner(cfg: DictConfig, splits: Splits, device: torch.device) -> Learner:
    """The model placed on `device`, the loss (from the training set's class counts) and the
    optimizer of `cfg` for `splits`: what a run trains, and what the benchmarks (l2rw.run.bench) time.
    Call after torch.manual_seed(cfg.seed): the model's initial weights come from it."""
    model = place_model(build_model(cfg.model, splits.image_shape, splits.num_classes), cfg.hardware, device)
    class_counts = torch.bincount(splits.train.labels, minlength=splits.num_classes)
    return Learner(model, build(cfg.loss, class_counts=class_counts), make_optimizer(model, cfg), class_counts)


def build_network(cfg: DictConfig, splits: Splits, device: torch.device, schedule: LrSchedule) -> Network:
    """A model of `cfg` for `splits`, placed on `device`, with its optimizer and `schedule`: what a
    method that trains models of its own (co-teaching's peer) trains beside the run's."""
    model = place_model(build_model(cfg.model, splits.image_shape, splits.num_classes), cfg.hardware, device)
    optimizer = make_optimizer(model, cfg)
    return Network(model, optimizer, make_scheduler(optimizer, schedule), cfg.clip_grad_norm)


def set_up_copy(method: Method, method_cfg: DictConfig, splits: Splits, loss_fn: LossFunction,
                new_network: NewNetwork) -> Method:
    """A copy of `method` set up for `splits` with a copy of the loss (`fit` sets up the method
    itself), made before anything is written: what the method builds for itself (Meta-Weight-Net's
    weight net, co-teaching's peer) stops the run when it does not fit in memory, as a model too
    big does (l2rw.models.build_model), a loss the method cannot weigh stops it in one line, and a
    checkpoint's method state is tried on it (Checkpoint.check_fits)."""
    try:
        probe = copy.deepcopy(method)
        with torch.random.fork_rng(devices=[]):  # the run's random stream is the same with or without the copy
            probe.setup(splits.train, splits.meta, splits.num_classes, torch.Generator(), loss_fn=copy.deepcopy(loss_fn),
                        new_network=new_network)
        return probe
    except (MemoryError, RuntimeError) as error:  # torch's CPU allocator refuses with a plain RuntimeError
        if not is_out_of_memory(error):
            raise
        raise UserError(method_too_big(method_cfg, error)) from None


def method_too_big(method_cfg: DictConfig, error: BaseException) -> str:
    """One line: the method that did not fit, how many bytes it asked for, and the options that size it, largest first."""
    request = allocation_request(error)
    sizes = sorted(((value, key) for key, value in method_cfg.items()
                    if key not in ("name", "_target_") and sizes_the_model(value) and not OmegaConf.is_list(value)), reverse=True)
    fix = " or ".join(f"method.{key}={value}" for value, key in sizes)
    return f"method={method_cfg.name} does not fit in memory{request}; make {fix or 'its sizes'} smaller"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    """One job: its results row is Hydra's return value (a sweeper reads its validation score there)."""
    if cfg.threads is None:
        cfg.threads = threads_per_job(HydraConfig.get().launcher)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        with stopping_at_once():
            return train(cfg, run_dir)
    except Interrupted as interrupted:  # before KeyboardInterrupt, which it is a kind of
        print(interrupted, file=sys.stderr)
        sys.exit(interrupted.exit_code)  # the shell's code for the signal: 130 Ctrl-C, 143 SIGTERM, 140 SIGUSR2
    except KeyboardInterrupt as interrupted:  # a second signal, or one while the data loads: no step finishes first
        print(f"interrupted at once; what the run wrote so far stays in {run_dir}, and a checkpoint.pt "
              "saved earlier resumes it with the same command", file=sys.stderr)
        sys.exit(interrupted.exit_code if isinstance(interrupted, StoppedAtOnce) else 130)
    except UserError as error:
        print(f"error: {shown(error)}", file=sys.stderr)
        sys.exit(2)
    except torch.OutOfMemoryError as error:  # the model was built, but a step or an evaluation needs more
        print(f"error: out of memory on hardware.device={cfg.hardware.device} ({str(error).splitlines()[0]}); lower batch_size "
              "or method.meta_batch_size, choose a smaller model or dataset.image_size, or try hardware.amp=bf16", file=sys.stderr)
        sys.exit(2)
    except TrialPruned as pruned:  # hydra.sweeper.pruner=median stopped this trial; the sweep goes on
        print(pruned, file=sys.stderr)
        return None
    except DivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on; its row says `diverged`
            sys.exit(1)
        return None


def cli() -> None:
    """`l2rw-train`: `main`, once l2rw.run.compose_errors has refused a command line Hydra cannot
    compose (one line, exit code 2), with Ctrl-C while Hydra composes the config (before any job
    started) as one line and the shell's exit code instead of a traceback."""
    try:
        refuse_composition_mistakes(sys.argv[1:])
        main()
    except KeyboardInterrupt:
        print("interrupted before any run started; nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
