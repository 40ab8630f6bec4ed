"""Pruning in a tuning sweep (hydra/sweeper=optuna hydra.sweeper.pruner=median): the run of a
trial reports its metric at every evaluation to its Optuna trial and stops when the pruner says
its curve is below the median of the earlier trials' at the same step.

The sweeper points each job at its trial through the environment (hydra.job.env_set); a run
started any other way has no trial and reports nothing.
"""
from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig

from l2rw.optional import require

STORAGE_ENV, STUDY_ENV, TRIAL_ENV = "L2RW_OPTUNA_STORAGE", "L2RW_OPTUNA_STUDY", "L2RW_OPTUNA_TRIAL_ID"
PRUNERS = ("none", "median")


def make_pruner(name: str):
    optuna = require("optuna", "optuna", "hydra/sweeper=optuna")
    # the first 5 trials are never pruned: too few curves to take a median of
    return optuna.pruners.MedianPruner(n_startup_trials=5) if name == "median" else optuna.pruners.NopPruner()


class TrialPruned(Exception):
    """The pruner stopped this trial's run; the run writes no row, and the sweeper counts the trial as pruned."""


class TrialReporter:
    """Reports `metric` at each evaluation to the trial; raises TrialPruned when the pruner says so,
    before `last_step`: a run that has trained to the end costs nothing more to finish."""

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str, pruner: str, last_step: int):
        optuna = require("optuna", "optuna", "hydra/sweeper=optuna")
        self.study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(pruner))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.metric = metric
        self.last_step = last_step

    @classmethod
    def for_this_job(cls, last_step: int) -> TrialReporter | None:
        """The reporter of the trial this job runs, when it runs one with a pruner; else None."""
        if TRIAL_ENV not in os.environ or not HydraConfig.initialized():
            return None
        sweeper = HydraConfig.get().sweeper
        if sweeper.get("pruner", "none") == "none":
            return None
        return cls(os.environ[STORAGE_ENV], os.environ[STUDY_ENV], int(os.environ[TRIAL_ENV]), sweeper.metric, sweeper.pruner,
                   last_step)

    def __call__(self, step: int, values: dict) -> None:
        from optuna.trial import TrialState

        if values.get(self.metric) in ("", None):
            return
        self.trial.report(float(values[self.metric]), step)
        if step < self.last_step and self.trial.should_prune():
            self.study.tell(self.trial.number, state=TrialState.PRUNED)
            raise TrialPruned(f"pruned at step {step}: its {self.metric} {values[self.metric]:.4f} is below the median "
                              "of earlier trials at this step (hydra.sweeper.pruner=median)")
