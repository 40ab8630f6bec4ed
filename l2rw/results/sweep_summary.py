"""The end of every `l2rw-train --multirun`: the table of what this sweep measured.

A Hydra callback (registered under `hydra.callbacks` in conf/config.yaml), so it runs in the
launching process after every launcher (basic, joblib, submitit) has collected its jobs:

    l2rw-train --multirun method=sgd,weighted_sampler,l2rw seed=0,1,2
    ...
    sweep summary: 9 row(s) this sweep wrote to outputs/results.csv
    | method | accuracy | balanced accuracy | s/step | seeds |
    ...

The rows this sweep wrote are those of `results_csv` whose `run_dir` lies under the sweep dir
and whose `time` (a job's start) is not before the sweep's start. Both come from the rows
themselves, so jobs running in other processes need to report nothing back. Jobs that
`skip_done` skipped wrote no row; `l2rw-report` shows every row of the file.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from l2rw.errors import UserError
from l2rw.results.read import load_results, summarise_table, table_lines
from l2rw.results.table import results_path


def sweep_rows(table: pd.DataFrame, sweep_dir: Path, started: datetime) -> pd.DataFrame:
    """The rows of `table` written by jobs of the sweep in `sweep_dir` that started at `started`."""
    if not {"run_dir", "time"} <= set(table.columns):
        return table.iloc[0:0]
    sweep_dir = sweep_dir.resolve()
    inside = table.run_dir.map(lambda d: bool(d) and Path(d).resolve().is_relative_to(sweep_dir)).astype(bool)
    # `time` has whole seconds: a job started in the sweep's first second counts
    since = pd.to_datetime(table.time, utc=True, errors="coerce") >= started.replace(microsecond=0)
    return table[inside & since]


def summary_text(results_csv: Path, sweep_dir: Path, started: datetime) -> str:
    """What to print at the end of the sweep: the report's table of its rows, or why there is none."""
    if not results_csv.is_file():
        return f"sweep summary: no row was written to {results_csv}"
    try:
        rows = sweep_rows(load_results(results_csv), sweep_dir, started)
        if rows.empty:
            return (f"sweep summary: this sweep wrote no row to {results_csv} (jobs already finished are "
                    f"skipped with skip_done=true); l2rw-report {results_csv} reports every row")
        lines = table_lines(summarise_table(rows, results_csv))
    except UserError as error:
        return f"sweep summary: {error}"
    return "\n".join([f"sweep summary: {len(rows)} row(s) this sweep wrote to {results_csv}", *lines])


class SweepSummary(Callback):
    """Prints `summary_text` when a --multirun ends; single runs print their own result."""

    def __init__(self) -> None:
        self.started: datetime | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = datetime.now(UTC)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(summary_text(results_path(config.results_csv), Path(config.hydra.sweep.dir), self.started))
