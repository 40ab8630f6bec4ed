"""Results tables as l2rw-report, l2rw-select and the end-of-sweep table read them: finished
runs grouped by their configuration columns (`l2rw.results.row.is_config`), seeds averaged.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from l2rw.errors import UserError
from l2rw.results.row import is_config

REQUIRED = ("method", "seed", "status", "accuracy", "balanced_accuracy")
METRICS = ("accuracy", "balanced_accuracy", "val_balanced_accuracy", "best_balanced_accuracy", "seconds_per_step")
RESULT_METRICS = ("accuracy", "balanced_accuracy")  # a finished run without these as numbers has no result
MISSING = "–"  # shown where a table has no value, never `nan`


def load_results(path: Path) -> pd.DataFrame:
    """Finished runs as strings (config values) with float metrics; a clear error otherwise."""
    if not path.exists():
        raise UserError(f"results CSV {path} does not exist; pass the `results_csv` file of your runs")
    if not path.is_file():
        raise UserError(f"results CSV {path} is not a regular file (a directory, device or pipe); pass the `results_csv` file of your runs")
    try:
        table = read_text_table(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a CSV table ({str(error).strip()}); pass the `results_csv` file of your runs") from None
    missing = [column for column in REQUIRED if column not in table.columns]
    if missing:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(missing)} that every l2rw results CSV has "
            f"(it has: {', '.join(table.columns) or 'nothing'}); pass the file named by `results_csv`"
        )
    for column in METRICS:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in config_columns(table):
        table[column] = table[column].map(canonical_number)
    return table


def read_text_table(path: Path) -> pd.DataFrame:
    """A CSV file, every field as text; pandas' errors for a file that is no table."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not isinstance(table.index, pd.RangeIndex):  # pandas takes the fields of rows longer than the header as an index
        raise pd.errors.ParserError("its rows have more fields than its header")
    return table


def canonical_number(value: str) -> str:
    """One text per number, so that 100 and 100.0 (as older results files may hold) name one setting."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else str(number)


def config_columns(table: pd.DataFrame) -> list[str]:
    """The configuration columns of a table but `seed` (averaged over) and `method` (always shown)."""
    return [c for c in table.columns if is_config(c) and c not in ("seed", "method")]


def setting_columns(table: pd.DataFrame) -> list[str]:
    """Method, then the config columns whose value differs between runs: what a group is named by.
    A `method.*` column counts only when it varies within one method (sgd has no meta_batch_size)."""
    def varies(column: str) -> bool:
        if column.startswith("method."):
            return bool((table.groupby("method")[column].nunique() > 1).any())
        return table[column].nunique() > 1

    return ["method", *[c for c in config_columns(table) if varies(c)]]


def fixed_settings(table: pd.DataFrame) -> dict[str, str]:
    return {c: table[c].iloc[0] for c in config_columns(table) if table[c].nunique() == 1 and table[c].iloc[0] != ""}


def sort_key(value: str):
    """Numbers in numeric order, before words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def sorted_groups(runs: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """(key, runs) per value of `columns`, numbers in numeric order."""
    return sorted(runs.groupby(columns), key=lambda item: [sort_key(v) for v in item[1].iloc[0][columns]])


def summarise(runs: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """One row per setting: mean and sample std (ddof=1) of each metric over seeds, and n."""
    metrics = [m for m in METRICS if m in runs.columns]
    groups = runs.groupby(settings, sort=False)
    summary = groups[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["seeds"] = groups.size()
    if "collapsed_step" in runs.columns:  # a run that ended collapsed has its collapsed_step set
        summary["collapsed"] = groups.collapsed_step.agg(lambda steps: steps.fillna("").astype(str).ne("").sum())
    summary = summary.reset_index()
    order = sorted(summary.index, key=lambda i: [sort_key(summary.at[i, c]) for c in settings])
    return summary.loc[order].reset_index(drop=True)


def mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return MISSING
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def row_name(table: pd.DataFrame, index) -> str:
    """How a note names one results row: its run_id, else its line in the CSV (line 1 is the header)."""
    run_id = table.at[index, "run_id"] if "run_id" in table.columns else ""
    return f"run_id {run_id}" if run_id else f"line {index + 2}"


def finished_runs(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs with status ok whose accuracy and balanced accuracy are finite numbers, and the
    names of the status-ok rows whose are not (a damaged or hand-edited row)."""
    ok = table[table.status == "ok"]
    numeric = np.isfinite(ok[list(RESULT_METRICS)]).all(axis=1)
    return ok[numeric], [row_name(table, i) for i in ok.index[~numeric]]


@dataclass
class Summary:
    """What the report says about a results table: the runs it averages and how it groups them."""

    table: pd.DataFrame     # every row reported on, whatever its status
    runs: pd.DataFrame      # finished runs with numeric results
    not_numbers: list[str]  # status-ok rows left out: their accuracy is not a number
    settings: list[str]     # the columns naming a group
    means: pd.DataFrame     # summarise(runs, settings)


def summarise_table(table: pd.DataFrame, source: Path) -> Summary:
    runs, not_numbers = finished_runs(table)
    if runs.empty:
        reason = f" (rows whose accuracy is not a number: {', '.join(not_numbers)})" if not_numbers else ""
        raise UserError(f"{source} has no run with status ok{reason}; nothing to report")
    settings = setting_columns(runs)
    return Summary(table, runs, not_numbers, settings, summarise(runs, settings))


def table_lines(summary: Summary) -> list[str]:
    """The markdown table (a row per method × setting), then what it leaves out and why."""
    means = summary.means
    # validation scores, "best" (test at the best validation score) and collapses are shown where the runs have them
    with_val = has_values(means, "val_balanced_accuracy_mean")
    with_best = has_values(means, "best_balanced_accuracy_mean")
    with_collapsed = "collapsed" in means.columns
    header = [*summary.settings, "accuracy", "balanced accuracy", *["best balanced accuracy"] * with_best,
              *["val balanced accuracy"] * with_val, "s/step", "seeds", *["collapsed"] * with_collapsed]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in means.iterrows():
        seconds = row.get("seconds_per_step_mean", np.nan)
        cells = [row[c] or MISSING for c in summary.settings] + [  # an empty setting was null
            mean_std(row.accuracy_mean, row.accuracy_std),
            mean_std(row.balanced_accuracy_mean, row.balanced_accuracy_std),
            *([mean_std(row.best_balanced_accuracy_mean, row.best_balanced_accuracy_std)] if with_best else []),
            *([mean_std(row.val_balanced_accuracy_mean, row.val_balanced_accuracy_std)] if with_val else []),
            MISSING if pd.isna(seconds) else f"{seconds:.4f}",
            str(row.seeds),
            *([str(int(row.collapsed))] if with_collapsed else []),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    failed = summary.table[summary.table.status != "ok"]
    if len(failed):
        counts = ", ".join(f"{n} {status or 'no status'}" for status, n in failed.status.value_counts().items())
        lines += ["", f"Left out: {counts} run(s) (see their `status` and `diverged_step`)."]
    if summary.not_numbers:
        lines += ["", f"Left out: {len(summary.not_numbers)} run(s) with status ok whose accuracy or "
                      f"balanced_accuracy is not a number ({', '.join(summary.not_numbers)})."]
    return lines


def has_values(means: pd.DataFrame, column: str) -> bool:
    return bool(column in means.columns and means[column].notna().any())


def setting_label(columns: list[str], key) -> str:
    """`method, column=value, ...`; a column the setting leaves empty (not read by its runs) is left out."""
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(v if c == "method" else f"{c}={v}" for c, v in zip(columns, key) if v != "")


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)

