"""Where L2RW (or Meta-Weight-Net) puts its weight, per setting: the majority class's share of the weight mass against
its share of the data, the minority classes' mean share, the share of zero weights, and the
corrupted examples' share when label noise corrupted any (`l2rw.results.weight_shares`: how).

    python scripts/weight_shares.py outputs/results.csv            # every l2rw or mwnet run with example_weights.csv
    python scripts/weight_shares.py outputs/results.csv --by method.smoothing,method.mix

Prints the mean and std over seeds per setting (the columns given with --by, default method,
imbalance and noise_rate).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from l2rw.results.weight_shares import shares_by_setting


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="results CSVs written by l2rw-train")
    parser.add_argument("--by", default="method,imbalance,noise_rate", help="comma-separated setting columns")
    args = parser.parse_args(argv)
    print(shares_by_setting(args.results, [column for column in args.by.split(",") if column]).to_string())


if __name__ == "__main__":
    main()
