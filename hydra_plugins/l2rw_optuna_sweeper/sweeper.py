"""OptunaSweeper: each batch of trials asked from an Optuna study, launched as ordinary l2rw runs
by the configured launcher (in parallel with hydra/launcher=joblib), and told the score each
run's results row holds (`l2rw.run.train.main` returns the row).

The study lives in a database (SQLite beside results_csv by default), named after the command's
search: rerunning a killed sweep's command loads it, counts the trials it finished, and asks
again what was running when it was killed (those runs resume from their checkpoints, or are
skipped by skip_done when they had finished). A study resumed keeps its direction and its
distributions: a command that changes either is refused.

The sweeper's options, the space, results_csv, the objective and the storage are all checked
before the first trial is asked: a mistake is one line, and no trial trains.
"""
from __future__ import annotations

import hashlib
import math
import sys
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.l2rw_optuna_sweeper.search_space import as_override, fixed_value, parse
from l2rw.errors import UserError
from l2rw.optional import require
from l2rw.results.row import OUTCOME_COLUMNS
from l2rw.results.selection import refuse_test_metric
from l2rw.results.table import check_results_csv, results_path
from l2rw.run.config_schema import as_typed
from l2rw.run.machine import jobs_at_once
from l2rw.run.trial_pruning import PRUNERS, STORAGE_ENV, STUDY_ENV, TRIAL_ENV, make_pruner
from l2rw.tracking.stores import prepare_database, sqlite_file

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")
DEFAULT_TRIALS = 20
# The columns of the results row a trial's score can be read from
VALIDATION_COLUMNS = tuple(column for column in OUTCOME_COLUMNS if column.startswith("val_"))
VALIDATION_SPLIT = "dataset.val_per_class"
SEED_MAX = 2**32 - 1  # the samplers' random generators take seeds below 2**32
INTERRUPTED = "interrupted"  # user attribute of a trial the previous, killed sweep left running


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials: int | None, n_jobs: int, metric: str, direction: str, sampler: str, seed: int, pruner: str,
                 storage: str | None, study_name: str | None, params: dict | None, spaces: dict | None) -> None:
        self.n_trials, self.n_jobs, self.metric, self.direction = n_trials, n_jobs, metric, direction
        self.sampler, self.seed, self.pruner = sampler, seed, pruner
        self.storage, self.study_name = storage, study_name
        # Hydra hands nested options over as DictConfig
        self.params = to_dict(params)
        self.spaces = to_dict(spaces)
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.run_study(arguments)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def run_study(self, arguments: list[str]) -> None:
        self.check_options()
        optuna = require("optuna", "optuna", "hydra/sweeper=optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial's line is printed below, with its overrides
        preset = self.preset_space()
        n_trials = self.n_trials or preset.get("n_trials") or DEFAULT_TRIALS
        searched = [f"{key}={value}" for key, value in (preset.get("params", {}) | self.params).items()] + list(arguments)
        space, fixed = parse(searched)
        if not space:
            raise UserError("hydra/sweeper=optuna has nothing to search: give a space, e.g. lr=tag(log,interval(0.01,1)) "
                            "momentum=choice(0,0.9), or a preset, e.g. +tune=fashion_mnist")
        self.check_validation_split(space, fixed)
        check_results_csv(self.config.results_csv)
        storage = self.storage or default_storage(self.config.results_csv)
        name = self.study_name or study_name(searched)
        study = self.open_study(optuna, storage, name)
        check_same_search(study, storage, self.direction, space)
        study.sampler = make_sampler(optuna, self.sampler, self.seed, len(study.trials))
        requeued = requeue_interrupted(study)
        done = finished_trials(study)
        print(f"optuna: study {name!r} in {storage}: {done} of {n_trials} trial(s) finished"
              + (f", {requeued} interrupted one(s) asked again" if requeued else "") + f"; {self.direction} {self.metric}")
        while done < n_trials:
            trials = [study.ask(space) for _ in range(min(jobs_at_once(self.n_jobs), n_trials - done))]
            pointers = (lambda trial: trial_env(storage, name, trial)) if self.pruner != "none" else (lambda trial: [])
            overrides = [[*fixed, *(as_override(key, trial.params[key]) for key in space), *pointers(trial)] for trial in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, job in zip(trials, returns):
                self.tell(study, trial, job, space)
            done += len(trials)
        print(best_trial_text(study, self.metric))

    def preset_space(self) -> dict:
        """The preset's {n_trials, params} for this sweep's method and loss ({} without a preset)."""
        if not self.spaces:
            return {}
        key = f"{self.config.method.name}_{self.config.loss.name}"
        if key not in self.spaces:
            raise UserError(f"the preset has no search space for method={self.config.method.name} loss={self.config.loss.name} "
                            f"(it has {', '.join(self.spaces)}); give the space on the command line, e.g. 'lr=tag(log,interval(0.01,1))'")
        return self.spaces[key]

    def check_options(self) -> None:
        if self.metric not in VALIDATION_COLUMNS:
            refuse_test_metric("hydra.sweeper.metric=", str(self.metric))
            raise UserError(f"hydra.sweeper.metric={as_typed(self.metric)} is not a validation column of the results row; "
                            f"use one of {', '.join(VALIDATION_COLUMNS)}")
        for key, value, allowed in (("direction", self.direction, DIRECTIONS), ("sampler", self.sampler, SAMPLERS),
                                    ("pruner", self.pruner, PRUNERS)):
            if value not in allowed:
                raise UserError(f"hydra.sweeper.{key}={as_typed(value)} is unknown; use one of {', '.join(allowed)}")
        if self.n_trials is not None:
            check_whole("n_trials", self.n_trials, 1)
        if self.n_jobs is not None:
            check_whole("n_jobs", self.n_jobs, note=" (-1: as many as the cores)")
        check_whole("seed", self.seed, 0, SEED_MAX)
        for key, value in (("storage", self.storage), ("study_name", self.study_name)):
            if value is not None and not (isinstance(value, str) and value):
                raise UserError(f"hydra.sweeper.{key}={as_typed(value)} must be a non-empty text, or null")

    def check_validation_split(self, space: dict, fixed: list[str]) -> None:
        """The score is a validation column: trials without a validation split would train for nothing."""
        if VALIDATION_SPLIT in space:  # each trial has its own
            return
        if fixed_value(fixed, VALIDATION_SPLIT, OmegaConf.select(self.config, VALIDATION_SPLIT)) == 0:
            raise UserError(f"hydra.sweeper.metric={self.metric}: the trials' rows would have none, as they have no "
                            f"validation split; give them one, {VALIDATION_SPLIT}=N (N > 0)")

    def open_study(self, optuna, storage: str, name: str):
        """The study `name`, made when missing, in a database Optuna can open that holds Optuna's
        tables only (l2rw.tracking.stores): nothing is written to any other."""
        from optuna.storages._rdb.models import BaseModel
        from sqlalchemy.exc import SQLAlchemyError

        database = sqlite_file(storage)
        if database and database.resolve() == results_path(self.config.results_csv).resolve():
            raise UserError(f"hydra.sweeper.storage={storage} is results_csv; give the study a file of its own, e.g. "
                            f"sqlite:///{database.parent / 'optuna.db'}")
        prepare_database("hydra.sweeper.storage", storage, "Optuna", BaseModel.metadata.tables)
        try:
            return optuna.create_study(storage=storage, study_name=name, direction=self.direction, load_if_exists=True,
                                       pruner=make_pruner(self.pruner))
        except SQLAlchemyError as error:  # a server's database that does not answer, or refuses the user
            raise UserError(f"hydra.sweeper.storage={storage}: Optuna cannot open it ({str(error).splitlines()[0]}); "
                            "check the URL, or use sqlite:///path/to/optuna.db") from None

    def tell(self, study, trial, job: JobReturn, space: dict) -> None:
        """Tell the study the trial's score, or that it failed (diverged, crashed) or was pruned."""
        from optuna.trial import TrialState

        overrides = " ".join(as_override(key, trial.params[key]) for key in space)
        if study.get_trials(deepcopy=False)[trial.number].state == TrialState.PRUNED:  # the run pruned itself (pruner=median)
            print(f"optuna: trial {trial.number} pruned: {overrides}")
            return
        row = job.return_value if job.status == JobStatus.COMPLETED else None
        value = score(row, self.metric) if isinstance(row, dict) else None
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
            print(f"optuna: trial {trial.number} failed: no {self.metric} (diverged or crashed; see {run_dir(job)}): {overrides}")
            return
        study.tell(trial, value)
        print(f"optuna: trial {trial.number}: {self.metric} {value:.4f}: {overrides}")


def run_dir(job: JobReturn) -> str:
    """Where the job's run wrote its files (the working dir is the launch folder: hydra.job.chdir=false)."""
    return OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir", default=None) or str(job.working_dir)


def to_dict(options: DictConfig | dict | None) -> dict:
    return OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options or {})


def check_whole(key: str, value: Any, minimum: int | None = None, maximum: int | None = None, note: str = "") -> None:
    """`value` is an int (YAML's true and false are not numbers) within the bounds given."""
    below = minimum is not None and isinstance(value, int) and value < minimum
    above = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or below or above:
        bounds = "" if minimum is None else f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"
        raise UserError(f"hydra.sweeper.{key}={as_typed(value)} must be a whole number{bounds}{note}")


def check_same_search(study, storage: str, direction: str, space: dict) -> None:
    """A study resumed (same name) keeps its direction and its trials' distributions: a changed one
    would rank the trials the other way, or mix values from two spaces."""
    kept = study.direction.name.lower()
    if kept != direction:
        raise UserError(f"hydra.sweeper.direction={direction}: study {study.study_name!r} in {storage} is to {kept} its "
                        f"metric; rerun with hydra.sweeper.direction={kept}, or name a new study with hydra.sweeper.study_name")
    for trial in study.get_trials(deepcopy=False):
        for key, searched in trial.distributions.items():
            if key in space and space[key] != searched:
                raise UserError(f"{key}: study {study.study_name!r} in {storage} searched it over {searched}, not "
                                f"{space[key]}; search the same space, or name a new study with hydra.sweeper.study_name")


def score(row: dict, metric: str) -> float | None:
    """The row's `metric` (a skipped job returns the finished row as read from the CSV: text)."""
    if row.get(metric) in ("", None):
        if row.get("status", "ok") != "ok":
            return None  # diverged
        raise UserError(f"hydra.sweeper.metric={metric}: the trials' rows have none; give them a validation split, "
                        "dataset.val_per_class=N (N > 0)")
    value = float(row[metric])
    return value if math.isfinite(value) else None


def default_storage(results_csv: str) -> str:
    """SQLite in results_csv's folder: the study sits with the rows its trials wrote."""
    return f"sqlite:///{results_path(results_csv).resolve().parent / 'optuna.db'}"


def study_name(searched: list[str]) -> str:
    """The same search (space and fixed overrides, in any order) is the same study: rerunning a
    command resumes it; changing any part of it starts another."""
    text = " ".join(sorted(searched))
    return text if len(text) <= 200 else f"{text[:180]}... {hashlib.sha256(text.encode()).hexdigest()[:12]}"


def make_sampler(optuna, sampler: str, seed: int, trials_so_far: int = 0):
    """The sampler, seeded by `seed` and the trials the study already holds: the same command asks
    the same trials, and a resumed study does not replay the random draws of its first run."""
    seed = (seed + trials_so_far) % (SEED_MAX + 1)
    return optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)


def requeue_interrupted(study) -> int:
    """Trials a killed sweep left running: failed (marked interrupted, not counted) and asked again
    with the same values, so their runs resume from their checkpoints."""
    from optuna.trial import Trial, TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        Trial(study, trial._trial_id).set_user_attr(INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(stale)


def finished_trials(study) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(not trial.user_attrs.get(INTERRUPTED) for trial in study.get_trials(deepcopy=False, states=states))


def trial_env(storage: str, name: str, trial) -> list[str]:
    """The job's pointers to its trial, which l2rw.run.trial_pruning reports each evaluation to."""
    values = {STORAGE_ENV: storage, STUDY_ENV: name, TRIAL_ENV: trial._trial_id}
    return [f"++hydra.job.env_set.{key}={quoted(value)}" for key, value in values.items()]


def quoted(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def best_trial_text(study, metric: str) -> str:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return f"optuna: no trial of study {study.study_name!r} finished with a {metric}"
    best = study.best_trial
    overrides = " ".join(as_override(key, value) for key, value in best.params.items())
    return (f"optuna: best of {len(study.trials)} trial(s): {metric} {best.value:.4f} (trial {best.number})\n"
            f"  best overrides: {overrides}")

