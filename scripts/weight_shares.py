"""Where L2RW puts its weight: each class's share of the total weight its runs gave, against the
class's share of the training set (what sgd gives it) and 1/K (what class_balanced gives it).

    python scripts/weight_shares.py outputs/results.csv            # every l2rw run with example_weights.csv
    python scripts/weight_shares.py outputs/results.csv --by method.mix

Reads each l2rw run's example_weights.csv (through the results CSV's run_dir column): an
example's weight mass is its mean relative weight x the steps that saw it. Prints, per setting
(the columns given with --by, default imbalance and noise_rate), the mean over seeds of the
majority class's share of weight mass, the minority classes' mean share, the share of clean
examples' mass when noise corrupted any, and the mean share of zero weights.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def run_shares(run_dir: Path) -> dict[str, float]:
    examples = pd.read_csv(run_dir / "example_weights.csv").dropna(subset=["mean_weight"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="results CSVs written by l2rw-train")
    parser.add_argument("--by", default="imbalance,noise_rate", help="comma-separated setting columns")
    args = parser.parse_args()
    by = [c for c in args.by.split(",") if c]
    runs = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False) for path in args.results])
    runs = runs[(runs.method == "l2rw") & (runs.status == "ok")]
    rows = []
    for _, run in runs.iterrows():
        if (Path(run.run_dir) / "example_weights.csv").is_file():
            rows.append({c: run[c] for c in by} | run_shares(Path(run.run_dir)))
    table = pd.DataFrame(rows)
    summary = table.groupby(by).agg(["mean", "std"]).round(3)
    summary.columns = [f"{column} {stat}" for column, stat in summary.columns]
    summary["seeds"] = table.groupby(by).size()
    print(summary.to_string())


if __name__ == "__main__":
    main()
