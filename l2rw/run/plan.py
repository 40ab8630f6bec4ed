"""l2rw-plan: what `l2rw-train --multirun OVERRIDES` would run, job by job, without running it.

    l2rw-plan +experiment=cifar10_lt_baselines                    # steps, lr, literature; runs on any CPU
    l2rw-plan --step-costs outputs/bench_step_cuda.csv +experiment=cifar10_lt_baselines   # and GPU time
    l2rw-plan --measure +experiment=fashion_mnist_baselines       # time measured here, now
    l2rw-plan +experiment=cifar100_lt seed=0,1,2                  # command-line sweeps add to the preset's

The sweep is expanded as Hydra's basic sweeper does (`hydra.sweeper.params`, then the command
line's `key=a,b`: the Cartesian product, a command-line key replacing the preset's) and every job is
composed and checked (`l2rw.run.config_schema.check_config`) as `l2rw-train` would. Each job's row:
its training images (`l2rw.data.splits.planned_train_counts`: CIFAR-10 and CIFAR-100 from their
official class sizes, so without the files; any other dataset through its loader), epochs, steps,
the lr where it changes, the step where deferred re-weighting switches the class weights on
(methods with `method.defer`), its time and the accuracy the literature reports for it
(conf/literature.yaml).

Time is steps x seconds per step, never guessed. `--step-costs CSV` (repeatable) reads rows that
`scripts/bench_step.py` wrote, e.g. on the GPU machine
`python scripts/bench_step.py --hardware cuda --models resnet32 --batch 128 --csv outputs/bench_step_cuda.csv`;
a job costs the row of its model, batch and step: l2rw and mwnet by `method.impl` ("l2rw fwd"),
weighted_sampler its own row, and plain SGD's row ("sgd") for sgd and class_balanced (a class
weight per example adds nothing measurable to a step), whatever the loss (the benchmark trains
cross-entropy; focal, LDAM and the others cost about the same). `--measure` times those steps now,
on this machine's GPU if it has one, else its CPU, through `l2rw.run.bench` (random images of the
job's shape, 10 classes). Evaluations, data loading and start-up come on top of either.
Bad input (an unknown override, a value the config check refuses) is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from l2rw.data import LabeledImages, build_splits
from l2rw.data.splits import PoolCounts, planned_train_counts
from l2rw.errors import UserError
from l2rw.methods import catalog
from l2rw.run import CONFIG_DIR, bench
from l2rw.run.compose_errors import basic_sweep_grid, composition_mistake
from l2rw.run.config_schema import check_config
from l2rw.run.instantiation import build
from l2rw.training.optimization import LrSchedule, lr_schedule, run_steps, steps_per_epoch

LITERATURE = Path(CONFIG_DIR) / "literature.yaml"

# The official training sets, 5,000 images in each of CIFAR-10's 10 classes and 500 in each of
# CIFAR-100's 100, both with an official test set (Krizhevsky 2009, "Learning Multiple Layers of
# Features from Tiny Images", and https://www.cs.toronto.edu/~kriz/cifar.html): the plan needs no files.
OFFICIAL_POOLS = {
    "l2rw.data.cifar10.load_cifar10": (PoolCounts([5000] * 10, [str(c) for c in range(10)], official_test=True), (3, 32, 32)),
    "l2rw.data.cifar100.load_cifar100": (PoolCounts([500] * 100, [str(c) for c in range(100)], official_test=True), (3, 32, 32)),
}

MEASURE_ROUNDS, MEASURE_STEPS = 3, 2  # an estimate for planning; scripts/bench_step.py's defaults measure more closely
MISSING = "–"


class StepKind(NamedTuple):
    """What a step's cost depends on, as a bench_step.py CSV row names it."""

    model: str
    batch: int
    label: str  # l2rw.run.bench.METHODS' label, e.g. "l2rw fwd"


@dataclass
class Job:
    """One point of the sweep: its config, composed from the overrides --multirun passes it."""

    swept: list[str]  # its overrides of the keys the sweep varies
    cfg: DictConfig
    recipe: str | None  # conf/recipe/ choice, if any


@dataclass
class JobPlan:
    job: Job
    train_size: int
    image_shape: tuple[int, ...]
    steps_per_epoch: int
    steps: int
    lr_at: list[tuple[str, float]]  # (where, lr) at the steps where the lr changes
    reweighting_from: int | None  # the step deferred re-weighting switches the class weights on
    step: StepKind | None  # None: no benchmark times this method's step
    literature: dict | None  # {"accuracy": ..., "source": ...}
    seconds_per_step: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_step is None else self.steps * self.seconds_per_step


def sweep_jobs(overrides: list[str]) -> list[Job]:
    """The jobs `l2rw-train --multirun OVERRIDES` launches, each composed, in the sweeper's order."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=overrides, run_mode=RunMode.MULTIRUN)
        grid = basic_sweep_grid(loader, master)
        if grid is None:
            raise UserError(f"hydra.sweeper is {master.hydra.sweeper._target_}, which picks its trials while it runs; "
                            "l2rw-plan expands the basic sweeper's grid only")
        varied = [i for i in range(len(grid[0])) if len({job[i] for job in grid}) > 1]
        jobs = []
        for job in grid:
            cfg = compose("config", overrides=[*master.hydra.overrides.hydra, *job], return_hydra_config=True)
            recipe = cfg.hydra.runtime.choices.get("recipe")
            with open_dict(cfg):
                del cfg["hydra"]
            jobs.append(Job([job[i] for i in varied], cfg, recipe))
    return jobs


class Pools:
    """Each dataset's pool counts and image shape, read once per plan: CIFAR's from OFFICIAL_POOLS,
    any other dataset's from its loader."""

    def __init__(self):
        self.loaded = {}

    def training_set(self, cfg: DictConfig) -> tuple[int, tuple[int, ...]]:
        """The training set's size and image shape."""
        source_cfg = cfg.dataset.source
        if source_cfg._target_ in OFFICIAL_POOLS:
            pool, shape = OFFICIAL_POOLS[source_cfg._target_]
            return sum(planned_train_counts(cfg, pool)), shape
        key = OmegaConf.to_yaml(source_cfg, resolve=True)
        if key not in self.loaded:
            self.loaded[key] = build(source_cfg)
        source = self.loaded[key]
        shape = tuple(source.pool.images.shape[1:])
        if source.groups is not None:  # held-out groups' image counts depend on the seed's shuffle
            return len(build_splits(cfg).train), shape
        return sum(planned_train_counts(cfg, PoolCounts.of(source))), shape


def plan_job(job: Job, pools: Pools, literature: dict) -> JobPlan:
    cfg = job.cfg
    check_config(cfg)
    train_size, shape = pools.training_set(cfg)
    batches = steps_per_epoch(train_size, cfg.batch_size)
    steps = run_steps(cfg, train_size)
    schedule = lr_schedule(cfg, steps, batches)
    return JobPlan(
        job, train_size, shape, batches, steps,
        lr_at=[(where(step, cfg, batches), cfg.lr * schedule.multiplier(step)) for step in lr_changes(schedule)],
        reweighting_from=reweighting_from(cfg, schedule),
        step=step_kind(cfg),
        literature=reported(cfg, job.recipe, literature),
    )


def lr_changes(schedule: LrSchedule) -> list[int]:
    """The steps worth an lr: the first, the first after the warm-up, then each where a stepwise
    schedule drops; a cosine changes every step, so its half-way and last steps instead."""
    after_warmup = schedule.warmup_epochs * schedule.steps_per_epoch
    steps = [0, after_warmup]
    if schedule.kind == "cosine":
        steps += [schedule.steps // 2, schedule.steps - 1]
    else:
        multipliers = [schedule.multiplier(step) for step in range(after_warmup, schedule.steps)]
        steps += [after_warmup + i for i in range(1, len(multipliers)) if multipliers[i] != multipliers[i - 1]]
    return sorted({step for step in steps if step < schedule.steps})


def where(step: int, cfg: DictConfig, batches: int) -> str:
    """A step as the config counts: `e160` (the epoch it starts) in an epoch-based run, else `s40000`."""
    return f"e{step // batches}" if cfg.epochs is not None and step % batches == 0 else f"s{step}"


def reweighting_from(cfg: DictConfig, schedule: LrSchedule) -> int | None:
    """The step from which a method with `defer` weights by class: its own rule, read off the method
    set up on two token images of two classes."""
    if "defer" not in cfg.method:
        return None
    method = build(cfg.method)
    token = LabeledImages(torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.arange(2))
    method.setup(token, token, 2, torch.Generator(), steps=schedule.steps, first_lr_drop=schedule.first_drop)
    return method.unweighted_steps


def step_kind(cfg: DictConfig) -> StepKind | None:
    """The step a job takes, labelled as l2rw.run.bench labels it: the method, and its `impl` when
    it has several ways to compute its weights; None for a method outside conf/method/, which no
    benchmark times."""
    name = cfg.method.name
    if (method := catalog().get(name)) is None:
        return None
    label = f"{name} {cfg.method.impl}" if method.implementations else name
    return StepKind(cfg.model.name, cfg.batch_size, label)


def load_literature(path: Path = LITERATURE) -> dict:
    return yaml.safe_load(path.read_text())


def reported(cfg: DictConfig, recipe: str | None, literature: dict) -> dict | None:
    """The literature's number for this dataset, imbalance ratio and recipe (a job without a recipe
    goes by method_loss, e.g. sgd_ce), for the model and profile the numbers were reported with."""
    if cfg.model.name != literature["model"] or cfg.dataset.profile != literature["profile"]:
        return None
    by_ratio = literature["top1"].get(cfg.dataset.name, {})
    recipes = next((entries for ratio, entries in by_ratio.items() if float(ratio) == float(cfg.imbalance_ratio)), {})
    return recipes.get(recipe or f"{cfg.method.name}_{cfg.loss.name}")


def read_step_costs(paths: list[Path]) -> tuple[dict[StepKind, float], str]:
    """Seconds per step by StepKind from bench_step.py CSVs, and where they were measured."""
    costs, machines = {}, set()
    for path in paths:
        if not path.is_file():
            raise UserError(f"--step-costs {path} is not a file; write it with scripts/bench_step.py --csv {path}")
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
        missing = [column for column in ("model", "batch", "method", "s_per_step") if column not in (reader.fieldnames or [])]
        if missing or not rows:
            what = f"the column(s) {', '.join(missing)}" if missing else "rows"
            raise UserError(f"--step-costs {path} has no {what} as scripts/bench_step.py writes them; pass a CSV it wrote")
        for row in rows:
            try:
                kind, seconds = StepKind(row["model"], int(row["batch"]), row["method"]), float(row["s_per_step"])
            except ValueError:
                raise UserError(f"--step-costs {path}: row {row['model']}, {row['method']} has batch {row['batch']!r} "
                                f"and s_per_step {row['s_per_step']!r}, which are not numbers") from None
            if kind in costs:
                raise UserError(f"--step-costs: two rows for model {kind.model}, batch {kind.batch}, method "
                                f"{kind.label!r} (machine, hardware or amp differ?); keep the one the sweep will run on")
            costs[kind] = seconds
            machines.add(row.get("machine") or "machine not recorded")
    return costs, f"step costs from {', '.join(map(str, paths))} ({'; '.join(sorted(machines))})"


class CountedContender:
    """A contender of l2rw.run.bench that moves the progress bar after each timed call."""

    def __init__(self, contender, bar: tqdm):
        self.contender, self.bar = contender, bar

    def seconds_per_step(self, steps: int) -> tuple[float, float]:
        timing = self.contender.seconds_per_step(steps)
        self.bar.update()
        return timing


def measure_step_costs(plans: list[JobPlan]) -> tuple[dict[StepKind, float], str]:
    """Seconds per step of each StepKind the plans need, timed now through l2rw.run.bench on this
    machine, each on the image shape, meta batch size and augmentation of the first job needing it."""
    hardware = "cuda" if torch.cuda.is_available() else "cpu"
    first = {}
    for plan in plans:
        if plan.step is not None:
            first.setdefault(plan.step, plan)
    unknown = sorted({kind.label for kind in first if kind.label not in bench.METHODS})
    if unknown:
        raise UserError(f"--measure cannot time {', '.join(unknown)}: l2rw.run.bench times {', '.join(bench.METHODS)}")
    groups = defaultdict(dict)  # one round-robin per model and batch, its sgd the unit
    for kind, plan in first.items():
        groups[kind.model, kind.batch][kind.label] = plan
    contenders = sum(len({bench.UNIT, *labels}) for labels in groups.values())
    costs = {}
    with tempfile.TemporaryDirectory() as workdir, tqdm(total=(MEASURE_ROUNDS + 1) * contenders, desc="timing steps", file=sys.stderr) as bar:
        for (model, batch), by_label in groups.items():
            example = next(iter(by_label.values()))
            meta_batch = next((p.job.cfg.method.meta_batch_size for p in by_label.values() if "meta_batch_size" in p.job.cfg.method),
                              bench.Comparison.meta_batch)
            comparison = bench.Comparison(
                methods=list(by_label), batch=batch, meta_batch=meta_batch, hardware=hardware,
                overrides=[f"dataset.augment={example.job.cfg.dataset.augment}"], rounds=MEASURE_ROUNDS, steps=MEASURE_STEPS,
            )
            timed = {
                label: CountedContender(bench.Contender(
                    bench.Run.on_random_data(bench.contender_overrides(model, label, comparison), example.image_shape, 10 * batch, meta_batch),
                    Path(workdir) / f"{model} {batch} {label}.csv",
                ), bar)
                for label in dict.fromkeys([bench.UNIT, *by_label])
            }
            timings = bench.time_in_rounds(timed, MEASURE_ROUNDS, MEASURE_STEPS)
            for label in by_label:
                costs[StepKind(model, batch, label)] = bench.timing_columns(label, timings)["s_per_step"]
    return costs, (f"step costs measured now on {bench.machine()} (hardware={hardware}), "
                   f"median of {MEASURE_ROUNDS} rounds x {MEASURE_STEPS} steps")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def total_time(plans: list[JobPlan]) -> str:
    seconds = [plan.seconds for plan in plans]
    return MISSING if None in seconds else duration(sum(seconds))


def markdown(header: list[str], rows: list[list]) -> str:
    return bench.markdown_table([dict(zip(header, row)) for row in rows], header)


def reweighting_cell(plan: JobPlan) -> str:
    """`s15040 = e160`: the step, and the epoch it starts when it starts one."""
    step = plan.reweighting_from
    if step is None:
        return MISSING
    epoch = where(step, plan.job.cfg, plan.steps_per_epoch)
    return f"s{step}" + (f" = {epoch}" if epoch.startswith("e") else "")


def render(plans: list[JobPlan], costs_origin: str | None) -> str:
    swept = any(plan.job.swept and plan.job.swept != [f"+recipe={plan.job.recipe}"] for plan in plans)
    recipes = any(plan.job.recipe for plan in plans)
    header = [*(["swept"] if swept else []), *(["recipe"] if recipes else []), "method+loss", "train", "epochs",
              "steps/epoch", "steps", "lr", "re-weighting from", "s/step", "time", "literature (top-1 %)"]
    rows = []
    for plan in plans:
        cfg = plan.job.cfg
        rows.append([
            *([" ".join(o for o in plan.job.swept if not o.startswith("+recipe=")) or MISSING] if swept else []),
            *([plan.job.recipe or MISSING] if recipes else []),
            f"{cfg.method.name}+{cfg.loss.name}", plan.train_size, MISSING if cfg.epochs is None else cfg.epochs,
            plan.steps_per_epoch, plan.steps, " · ".join(f"{at} {lr:.3g}" for at, lr in plan.lr_at),
            reweighting_cell(plan),
            MISSING if plan.seconds_per_step is None else f"{plan.seconds_per_step:.4g}",
            MISSING if plan.seconds is None else duration(plan.seconds),
            "" if plan.literature is None else f"{plan.literature['accuracy']:.2f} ({plan.literature['source']})",
        ])
    by_method = defaultdict(list)
    for plan in plans:
        by_method[plan.job.cfg.method.name].append(plan)
    totals = [[name, len(group), sum(p.steps for p in group), total_time(group)] for name, group in by_method.items()]
    totals.append(["all", len(plans), sum(p.steps for p in plans), total_time(plans)])
    lines = [f"{len(plans)} job(s); nothing trained, nothing written", "", markdown(header, rows), "",
             markdown(["method", "jobs", "steps", "time"], totals), ""]
    return "\n".join(lines + time_note(plans, costs_origin))


def time_note(plans: list[JobPlan], costs_origin: str | None) -> list[str]:
    """Where the times come from, and which step costs are missing; without costs, how to get them."""
    if costs_origin is None:
        models = " ".join(sorted({plan.job.cfg.model.name for plan in plans}))
        batches = sorted({plan.job.cfg.batch_size for plan in plans})
        commands = "; ".join(f"python scripts/bench_step.py --hardware cuda --models {models} --batch {batch} --csv "
                             f"outputs/bench_step_cuda{'' if len(batches) == 1 else f'_{batch}'}.csv" for batch in batches)
        return [f"time: time the steps on the GPU ({commands}) and pass each CSV as --step-costs, or --measure to time them here"]
    note = [f"time: steps x s/step ({costs_origin}); evaluations, data loading and start-up come on top"]
    missing = [f"model {kind.model}, batch {kind.batch}, {kind.label!r}"
               for kind in sorted({plan.step for plan in plans if plan.seconds is None and plan.step is not None})]
    missing += [f"method={name} (no benchmark times its step)" for name in sorted({plan.job.cfg.method.name for plan in plans if plan.step is None})]
    return note + (["no step cost for: " + "; ".join(missing)] if missing else [])


def plan_sweep(overrides: list[str]) -> list[JobPlan]:
    pools, literature = Pools(), load_literature()
    plans = []
    for job in (jobs := sweep_jobs(overrides)):
        try:
            plans.append(plan_job(job, pools, literature))
        except UserError as error:
            which = f" (job {' '.join(job.swept)})" if len(jobs) > 1 else ""
            raise UserError(f"{error}{which}") from None
    return plans


def add_step_costs(plans: list[JobPlan], costs: dict[StepKind, float]) -> None:
    for plan in plans:
        plan.seconds_per_step = costs.get(plan.step)


def one_line(error: Exception) -> str:
    """Hydra's multi-line message on one line, without its config search path."""
    text = str(error).split("\nConfig search path:")[0]
    joined = ""
    for line in filter(None, (line.strip() for line in text.splitlines())):
        joined += line if not joined else (" " if joined.endswith((".", ":")) else "; ") + line
    return joined


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="l2rw-plan", description=__doc__.split("\n")[0])
    costs = parser.add_mutually_exclusive_group()
    costs.add_argument("--step-costs", type=Path, action="append", metavar="CSV",
                       help="seconds per step from scripts/bench_step.py's CSV (repeat for several)")
    costs.add_argument("--measure", action="store_true", help="time each job's step now, on this machine")
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted and ignored: the plan always expands the sweep")
    parser.add_argument("overrides", nargs="*", help="as l2rw-train's, e.g. +experiment=cifar10_lt_baselines seed=0,1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        plans = plan_sweep(args.overrides)
        origin = None
        if args.step_costs:
            costs, origin = read_step_costs(args.step_costs)
            add_step_costs(plans, costs)
        elif args.measure:
            costs, origin = measure_step_costs(plans)
            add_step_costs(plans, costs)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as error:
        # a command line that does not compose is worded as l2rw-train words it; Hydra's message, joined, for the rest
        print(f"error: {composition_mistake(args.overrides, multirun=True) or one_line(error)}", file=sys.stderr)
        return 2
    print(render(plans, origin))
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
