"""Where L2RW (or another method that weighs each example) puts its weight: each class's share of the total weight a run gave, against the
class's share of the training set (what sgd gives it) and 1/K (what class_balanced gives it).

Read from each such run's example_weights.csv (through the results CSV's run_dir column): an
example's weight mass is its mean relative weight x the steps that saw it, so every step counts
alike (the results row's `trained_prior` counts each step by its lr instead).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from l2rw.methods import learns_example_weights
from l2rw.results.read import finished_runs, load_results
from l2rw.results.run_files import EXAMPLE_WEIGHTS


def run_shares(run_dir: Path) -> dict[str, float]:
    """One run's majority class share of the data and of the weight mass, the minority classes'
    mean share of the mass, the share of zero weights, and the corrupted examples' shares when
    label noise corrupted any."""
    examples = pd.read_csv(run_dir / EXAMPLE_WEIGHTS).dropna(subset=["mean_weight"])
    mass = examples.mean_weight * examples.steps_seen
    by_class = mass.groupby(examples["class"].astype(str)).sum() / mass.sum()
    counts = examples["class"].astype(str).value_counts()
    majority = counts.idxmax()
    shares = {
        "majority_data_share": counts[majority] / counts.sum(),
        "majority_weight_share": by_class[majority],
        "minority_weight_share": by_class.drop(majority).mean(),
        "zero_share": (examples.zero_share * examples.steps_seen).sum() / examples.steps_seen.sum(),
    }
    if examples.corrupted.any():
        shares["corrupted_data_share"] = examples.corrupted.mean()
        shares["corrupted_weight_share"] = mass[examples.corrupted == 1].sum() / mass.sum()
    return shares


def shares_by_setting(results: list[Path], by: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of `run_shares`, per setting (the `by` columns), for the finished
    runs of methods that weigh each example whose example_weights.csv is readable."""
    runs, _ = finished_runs(pd.concat([load_results(path) for path in results]))
    runs = runs[runs.method.map(learns_example_weights).astype(bool)]
    rows = [
        {column: run[column] for column in by} | run_shares(Path(run.run_dir))
        for _, run in runs.iterrows() if (Path(run.run_dir) / EXAMPLE_WEIGHTS).is_file()
    ]
    table = pd.DataFrame(rows)
    summary = table.groupby(by).agg(["mean", "std"]).round(3)
    summary.columns = [f"{column} {stat}" for column, stat in summary.columns]
    summary["seeds"] = table.groupby(by).size()
    return summary
