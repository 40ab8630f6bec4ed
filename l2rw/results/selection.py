"""l2rw-select: choose each method's hyper-parameters by validation score, then report the choice's test numbers.

    l2rw-train --multirun method=l2rw lr=0.03,0.1,0.3 dataset.val_per_class=20 seed=0,1,2
    l2rw-select outputs/results.csv                    # prints one row per setting
    l2rw-select outputs/results.csv --tuned lr --out outputs/selected.csv

Tuned columns (default: lr, momentum, weight_decay and every `method.*` column that takes more
than one value within a method; `--tuned` replaces the list). A setting is every other config
column except `seed`, as l2rw-report groups runs. Within a setting, each candidate (one
combination of tuned values) is scored by the mean of `--metric` (a validation column) over
its seeds; the highest mean wins, then the lower std, then the first in sorted order. The test
balanced accuracy is only reported for the winner: the test set never takes part in the choice.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from l2rw.errors import UserError
from l2rw.file_io import check_replaceable, write_replacing
from l2rw.results.read import (
    config_columns,
    finished_runs,
    load_results,
    mean_std,
    note,
    setting_columns,
    setting_label,
    summarise,
)

DEFAULT_TUNED = ("lr", "momentum", "weight_decay")
DEFAULT_METRIC = "val_balanced_accuracy"
TEST_METRIC = "balanced_accuracy"
# Every table this tool writes ends with these columns.
LAST_COLUMNS = (f"{TEST_METRIC}_mean", f"{TEST_METRIC}_std", "seeds", "candidates")


def tuned_columns(runs: pd.DataFrame, requested: list[str] | None) -> list[str]:
    if requested is None:
        # setting_columns keeps exactly the method.* columns that vary within a method
        varying_method_keys = [c for c in setting_columns(runs) if c.startswith("method.")]
        return [c for c in DEFAULT_TUNED if c in runs.columns] + varying_method_keys
    unknown = [c for c in requested if c not in config_columns(runs)]
    if unknown:
        raise UserError(f"--tuned {','.join(unknown)}: not a config column of the results; "
                        f"choose from {', '.join(config_columns(runs))}")
    return requested


def refuse_test_metric(option: str, metric: str) -> None:
    """Choosing hyper-parameters (here, or in a tuning sweep) reads a validation column only."""
    if not metric.startswith("val_"):
        raise UserError(f"{option}{metric}: choose on a validation column (val_...); "
                        "choosing on the test set would overstate the chosen setting's test score")


def validation_scores(runs: pd.DataFrame, metric: str, source: Path) -> pd.Series:
    """`metric` as numbers; every run must have one, or the choice would silently fall back on fewer runs."""
    refuse_test_metric("--metric ", metric)
    scores = pd.to_numeric(runs.reindex(columns=[metric])[metric], errors="coerce")  # an absent column: all NaN
    if scores.isna().any():
        first = runs[scores.isna()].iloc[0]
        raise UserError(
            f"{source}: {scores.isna().sum()} of {len(runs)} finished run(s) have no {metric} "
            f"(e.g. run_id {first.get('run_id', '?')}, method {first.method}, seed {first.seed}); "
            "rerun them with a balanced validation split, dataset.val_per_class=N (N > 0)"
        )
    return scores


def score_candidates(runs: pd.DataFrame, settings: list[str], tuned: list[str], metric: str) -> pd.DataFrame:
    """One row per setting × candidate: test numbers and seeds (sorted as l2rw-report sorts),
    then the validation mean and std."""
    keys = [*settings, *tuned]
    validation = runs.groupby(keys)[metric].agg(["mean", "std"]).add_prefix(f"{metric}_").reset_index()
    tested = summarise(runs, keys)
    tested = tested.drop(columns=[c for c in validation.columns if c not in keys and c in tested.columns])
    return tested.merge(validation, on=keys, how="left")


def best_candidate(candidates: pd.DataFrame, metric: str) -> pd.Series:
    """Highest validation mean, then lowest std (one seed has none: ranks last), then the first in sorted order."""
    def rank(i):
        std = candidates.at[i, f"{metric}_std"]
        return (-candidates.at[i, f"{metric}_mean"], math.inf if pd.isna(std) else std)

    return candidates.loc[min(candidates.index, key=rank)]  # min keeps the first of equal ranks


def warn_uneven_seeds(setting: str, candidates: pd.DataFrame, tuned: list[str]) -> None:
    if candidates.seeds.nunique() > 1:
        varying = [c for c in tuned if candidates[c].nunique() > 1]  # constant ones would only lengthen the line
        counts = "; ".join(f"{setting_label(varying, tuple(row[varying]))}: {row.seeds}"
                           for _, row in candidates.iterrows())
        print(f"warning: {setting}: candidates have unequal numbers of seeds ({counts}); "
              "their means are not equally reliable", file=sys.stderr)


def select(results: Path, tuned: list[str] | None, metric: str) -> pd.DataFrame:
    """One row per setting (named by the columns that vary) with its chosen candidate."""
    runs, not_numbers = finished_runs(load_results(results))
    if not_numbers:
        note(f"{results}: left out, their accuracy is not a number: {', '.join(not_numbers)}")
    runs = runs.copy()
    if runs.empty:
        raise UserError(f"{results} has no run with status ok; nothing to select from")
    runs[metric] = validation_scores(runs, metric, results)
    tuned = tuned_columns(runs, tuned)
    # the metric is an outcome even when it is not (yet) an outcome column of l2rw.results.row
    settings = [c for c in setting_columns(runs) if c not in tuned and c != metric]
    chosen = []
    for key, candidates in score_candidates(runs, settings, tuned, metric).groupby(settings, sort=False):
        warn_uneven_seeds(setting_label(settings, key), candidates, tuned)
        chosen.append(best_candidate(candidates, metric).to_dict() | {"candidates": len(candidates)})
    shown_tuned = [c for c in tuned if any(row[c] != "" for row in chosen)]  # e.g. sgd's method.* columns
    numbers = [f"{metric}_mean", f"{metric}_std", *LAST_COLUMNS]
    return pd.DataFrame(chosen)[[*settings, *shown_tuned, *numbers]]


def markdown_table(chosen: pd.DataFrame, metric: str) -> str:
    labels = [c for c in chosen.columns if not c.endswith(("_mean", "_std")) and c not in ("seeds", "candidates")]
    header = [*labels, f"{metric} (chosen on)", f"{TEST_METRIC} (test)", "seeds", "candidates"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in chosen.iterrows():
        cells = [row[c] or "–" for c in labels] + [
            mean_std(row[f"{metric}_mean"], row[f"{metric}_std"]),
            mean_std(row[f"{TEST_METRIC}_mean"], row[f"{TEST_METRIC}_std"]),
            row.seeds, row.candidates,
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def check_out(out: Path, results: Path) -> None:
    """Refuse an --out whose writing would lose data: the results read, or anything but a table
    this tool wrote there (rerunning may replace one of those, unless it was edited since)."""
    if out.exists() and results.exists() and out.samefile(results):
        raise UserError(f"--out {out} is the results CSV being read; choose another path")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: cannot write this file ({out.parent} is not a folder); choose another path")
    check_replaceable(out, f"--out {out}", "a table l2rw-select wrote")


def column_list(text: str) -> list[str]:
    return list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2rw-select", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="results CSV written by l2rw-train (`results_csv`)")
    parser.add_argument("--tuned", type=column_list,
                        help="comma-separated columns to choose (default: lr,momentum,weight_decay and the "
                             "method.* columns that vary within a method)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help=f"validation column to maximise (default {DEFAULT_METRIC})")
    parser.add_argument("--out", type=Path, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    try:
        if args.out:
            check_out(args.out, args.results)
        chosen = select(args.results, args.tuned, args.metric)
        if args.out:
            try:
                write_replacing(args.out, chosen.to_csv(index=False).encode())
            except OSError as error:
                reason = error.strerror or error
                raise UserError(f"--out {args.out}: cannot write this file ({reason}); choose another path") from None
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(markdown_table(chosen, args.metric), end="")


if __name__ == "__main__":
    main()
