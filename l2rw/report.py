"""l2rw-report: a results CSV -> a markdown table (mean ± std over seeds) and PNG plots.

    l2rw-train --multirun +experiment=noise_and_imbalance
    l2rw-report outputs/results.csv                  # writes outputs/report/
    l2rw-report outputs/results.csv --out my_report

Runs are grouped by every config column except `seed`; the table and the plots show the
columns that vary. Run it from the folder the runs were launched from: the weight-curve plot
reads each run's metrics.csv through the `run_dir` column.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from l2rw.errors import UserError  # noqa: E402
from l2rw.results import OUTCOME_COLUMNS  # noqa: E402

REQUIRED = ("method", "seed", "status", "accuracy", "balanced_accuracy")
METRICS = ("accuracy", "balanced_accuracy", "seconds_per_step")
# x axis of each "balanced accuracy vs ..." plot: the results column, and its label
AXES = {"imbalance": "imbalance (majority class share)", "noise_rate": "noise rate", "meta_per_class": "meta images per class"}


def load_results(path: Path) -> pd.DataFrame:
    """Finished runs as strings (config values) with float metrics; a clear error otherwise."""
    if not path.is_file():
        raise UserError(f"results CSV {path} does not exist; pass the `results_csv` file of your runs")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
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


def canonical_number(value: str) -> str:
    """One text per number, so that 100 and 100.0 (as older results files may hold) name one setting."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else str(number)


def config_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in OUTCOME_COLUMNS and c not in ("seed", "method")]


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


def summarise(runs: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """One row per setting: mean and sample std (ddof=1) of each metric over seeds, and n."""
    metrics = [m for m in METRICS if m in runs.columns]
    summary = runs.groupby(settings, sort=False)[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["seeds"] = runs.groupby(settings, sort=False).size()
    summary = summary.reset_index()
    order = sorted(summary.index, key=lambda i: [sort_key(summary.at[i, c]) for c in settings])
    return summary.loc[order].reset_index(drop=True)


def mean_std(mean: float, std: float) -> str:
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_report(source: Path, table: pd.DataFrame, summary: pd.DataFrame, settings: list[str]) -> str:
    fixed = ", ".join(f"{k}={v}" for k, v in fixed_settings(table).items())
    header = [*settings, "accuracy", "balanced accuracy", "s/step", "seeds"]
    lines = [
        f"# l2rw report: {source}", "",
        f"Mean ± sample std over seeds. Same in every run: {fixed or '(nothing)'}.", "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for _, row in summary.iterrows():
        cells = [row[c] or "–" for c in settings] + [  # an empty setting was null
            mean_std(row.accuracy_mean, row.accuracy_std),
            mean_std(row.balanced_accuracy_mean, row.balanced_accuracy_std),
            f"{row.seconds_per_step_mean:.4f}" if "seconds_per_step_mean" in row else "",
            str(row.seeds),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    failed = table[table.status != "ok"]
    if len(failed):
        counts = ", ".join(f"{n} {status}" for status, n in failed.status.value_counts().items())
        lines += ["", f"Left out: {counts} run(s) (see their `status` and `diverged_step`)."]
    return "\n".join(lines) + "\n"


def plot_against(summary: pd.DataFrame, settings: list[str], x: str, path: Path) -> bool:
    """Balanced accuracy vs column `x`, one line (with std error bars) per other setting."""
    if x not in summary.columns:
        return False
    data = summary[summary[x] != ""].assign(x=lambda s: pd.to_numeric(s[x], errors="coerce")).dropna(subset=["x"])
    if data.empty:
        return False
    lines = [c for c in settings if c != x]
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, line in data.groupby(lines, sort=False):
        line = line.sort_values("x")
        axes.errorbar(line.x, line.balanced_accuracy_mean, yerr=line.balanced_accuracy_std.fillna(0),
                      marker="o", capsize=3, label=setting_label(lines, key))
    axes.set_xlabel(AXES[x])
    axes.set_ylabel("balanced accuracy (test)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    save(figure, path)
    return True


def setting_label(columns: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(v if c == "method" else f"{c}={v}" for c, v in zip(columns, key))


def weight_curves(runs: pd.DataFrame, settings: list[str]) -> dict[str, pd.DataFrame]:
    """Per setting, at its highest noise rate: the mean over seeds of the clean and corrupted
    examples' weight curves (windows where every step was skipped have no value and are left out)."""
    if not {"noise_rate", "run_dir"} <= set(runs.columns):
        return {}
    noisy = runs[pd.to_numeric(runs.noise_rate, errors="coerce") > 0]
    noisy = noisy[noisy.run_dir.map(lambda d: (Path(d) / "metrics.csv").is_file()).astype(bool)]
    panels = [c for c in settings if c != "noise_rate"]
    curves = {}
    for key, group in sorted(noisy.groupby(panels), key=lambda item: [sort_key(v) for v in item[1].iloc[0][panels]]):
        rate = max(group.noise_rate, key=float)
        seeds = group[group.noise_rate == rate]
        metrics = pd.concat([pd.read_csv(Path(d) / "metrics.csv") for d in seeds.run_dir])
        if {"weight_clean", "weight_noisy"} <= set(metrics.columns):
            title = f"{setting_label(panels, key)}\nnoise_rate={rate}, {len(seeds)} seed(s)"
            curves[title] = metrics.groupby("step")[["weight_clean", "weight_noisy"]].mean()
    return curves


def plot_weight_curves(curves: dict[str, pd.DataFrame], path: Path) -> bool:
    """Mean weight (1 = uniform) of clean vs corrupted training examples over training, a panel per setting."""
    if not curves:
        return False
    columns = min(len(curves), 4)
    rows = -(-len(curves) // columns)
    figure, panels = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), sharey=True, squeeze=False)
    for axes, (title, curve) in zip(panels.flat, curves.items()):
        axes.plot(curve.index, curve.weight_clean, marker=".", label="clean examples")
        axes.plot(curve.index, curve.weight_noisy, marker=".", label="corrupted examples")
        axes.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axes.set_title(title, fontsize="small")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    for axes in panels.flat[len(curves):]:
        axes.set_visible(False)
    for axes in panels[:, 0]:
        axes.set_ylabel("mean weight (1 = uniform)")
    panels[0][0].legend(fontsize="small")
    save(figure, path)
    return True


def save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(results: Path, out: Path) -> list[Path]:
    """Write report.md and the plots into `out`; return the files written."""
    table = load_results(results)
    runs = table[table.status == "ok"]
    if runs.empty:
        raise UserError(f"{results} has no run with status ok; nothing to report")
    settings = setting_columns(runs)
    summary = summarise(runs, settings)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot make this folder ({error.strerror}); choose another path")
    written = [out / "report.md"]
    written[0].write_text(markdown_report(results, table, summary, settings))
    for x in AXES:
        path = out / f"balanced_accuracy_vs_{x}.png"
        if plot_against(summary, settings, x, path):
            written.append(path)
        else:
            skip(path, f"`{x}` is absent or the same in every run of {results}")
    path = out / "weights_clean_vs_noisy.png"
    if plot_weight_curves(weight_curves(runs, settings), path):
        written.append(path)
    else:
        skip(path, "no noisy run with a readable run_dir/metrics.csv")
    return written


def skip(plot: Path, reason: str) -> None:
    """Say why `plot` is not drawn, and remove an earlier report's copy, which would pass for this one's."""
    plot.unlink(missing_ok=True)
    print(f"note: {reason}; skipped {plot.name}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2rw-report", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="results CSV written by l2rw-train (`results_csv`)")
    parser.add_argument("--out", type=Path, help="output folder (default: report/ next to the CSV)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.results, args.out or args.results.parent / "report")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
