"""The logger interface, and the set of a run's loggers that keeps the run going when one fails."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig

from l2rw.results.row import OUTCOME_COLUMNS
from l2rw.run.instantiation import build
from l2rw.run.trial_pruning import TrialReporter


class RunLogger:
    """What a logger is told: the run starts, each evaluation, the finished row, the end."""

    def start(self, run_dir: Path, params: dict) -> None:
        """`params`: the resolved config the run reads, flattened to dotted keys."""

    def log_evaluation(self, step: int, values: dict, example_weights: torch.Tensor) -> None:
        """`values`: the metrics.csv row and `recall/<class>`; empty cells are ''."""

    def finish(self, row: dict, run_dir: Path) -> None:
        """The results row, after every file of the run dir is written."""

    def close(self, finished: bool) -> None:
        """Always called last; `finished` is false when the run stopped early (diverged, interrupted, failed)."""


def flatten(values: dict, prefix: str = "") -> dict:
    """{"method": {"lr": 1}} -> {"method.lr": 1}; lists stay values."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(values: dict) -> dict[str, float]:
    """The finite numbers among `values` (metrics.csv leaves a cell empty when there is none)."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def final_metrics(row: dict) -> dict[str, float]:
    """The row's outcome (scores, steps, seconds, memory) that is a number: what a sweep's runs are compared on."""
    return numbers({key: row.get(key) for key in OUTCOME_COLUMNS})


class RunLoggers:
    """A run's loggers, each called in turn; one that raises is warned about once and dropped.
    In a tuning sweep's trial with a pruner, the trial hears each evaluation too, and its
    TrialPruned is the one exception that stops the run."""

    def __init__(self, loggers: dict[str, RunLogger], warn: Callable[[str], None] | None = None,
                 trial: TrialReporter | None = None):
        self.loggers = dict(loggers)
        self.warn = warn or (lambda message: print(message, file=sys.stderr))
        self.trial = trial

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunLoggers:
        """The loggers `cfg.logger` names (`logger=csv`: none); constructing one imports its
        optional package, so a missing one is a UserError here, before training."""
        chosen = cfg.get("logger") or {}
        return cls({name: build(options) for name, options in chosen.items()}, trial=TrialReporter.for_this_job(cfg.steps))

    @contextmanager
    def watching(self, run_dir: Path, values: dict) -> Iterator[RunLoggers]:
        """Start every logger with the values the run reads (`l2rw.run.spec.RunSpec.values`); close
        them when the block ends, as finished when it ends without an exception (diverged,
        interrupted, pruned or failed: unfinished)."""
        self._each("start", run_dir, flatten(values) if self.loggers else {})
        finished = False
        try:
            yield self
            finished = True
        finally:
            self._each("close", finished)

    def log_evaluation(self, step: int, values: dict, example_weights: torch.Tensor) -> None:
        self._each("log_evaluation", step, values, example_weights)
        if self.trial is not None:
            self.trial(step, values)

    def finish(self, row: dict, run_dir: Path) -> None:
        self._each("finish", row, run_dir)

    def _each(self, call: str, *args) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, call)(*args)
            except Exception as error:  # noqa: BLE001  whatever a logger's backend raises, the run goes on
                del self.loggers[name]
                self.warn(f"warning: logger={name} failed ({type(error).__name__}: {error}); it is off for the rest of "
                          "this run, whose CSV files and results row are written as usual")
                if call != "close":
                    try:
                        logger.close(False)
                    except Exception:  # noqa: BLE001  already warned about this logger
                        pass
