"""l2rw-report: a results CSV -> a markdown table (mean ± std over seeds) and PNG plots.

    l2rw-train --multirun +experiment=noise_and_imbalance
    l2rw-report outputs/results.csv                  # writes outputs/report/
    l2rw-report outputs/results.csv --out my_report

Runs are grouped by every config column except `seed`; the table and the plots show the
columns that vary. Run it from the folder the runs were launched from: the weight plots read
each run's metrics.csv and example_weights.csv through the `run_dir` column. A run whose
accuracy is not a number, or whose file is empty or damaged, is left out with a note naming it.
"""
from __future__ import annotations

import argparse
import io
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l2rw.errors import UserError
from l2rw.file_io import check_replaceable, remove_written, write_replacing
from l2rw.methods import learns_example_weights
from l2rw.results.read import (
    Summary,
    fixed_settings,
    load_results,
    note,
    read_text_table,
    row_name,
    setting_label,
    sorted_groups,
    summarise_table,
    table_lines,
)
from l2rw.results.run_files import EXAMPLE_WEIGHTS, METRICS

# x axis of each "balanced accuracy vs ..." plot: the results column, and its label
AXES = {"imbalance": "imbalance (majority class share)", "noise_rate": "noise rate", "meta_per_class": "meta images per class"}
WEIGHT_CURVES = "weights_clean_vs_noisy.png"
HISTOGRAM = "example_weights_histogram.png"
HISTOGRAM_BINS = 30
LEARNING_CURVES = "learning_curves.png"
REPORT = "report.md"
# Every file a report writes into its folder, or removes there when it has nothing to draw
REPORT_FILES = (REPORT, *(f"balanced_accuracy_vs_{x}.png" for x in AXES), LEARNING_CURVES, WEIGHT_CURVES, HISTOGRAM)


def markdown_report(source: Path, summary: Summary) -> str:
    fixed = ", ".join(f"{k}={v}" for k, v in fixed_settings(summary.table).items())
    lines = [
        f"# l2rw report: {source}", "",
        f"Mean ± sample std over seeds. Same in every run: {fixed or '(nothing)'}.", "",
        *table_lines(summary),
    ]
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


def has_file(run_dir: str, name: str) -> bool:
    return bool(run_dir) and (Path(run_dir) / name).is_file()  # an empty run_dir is no dir, not the current one


def read_run_csv(path: Path, numeric: tuple[str, ...], plot: str, text: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """A run dir's CSV with its `numeric` columns as numbers (an empty field: NaN); None, after a
    note naming the file and what is wrong with it, when it is empty, damaged or lacks a column."""
    def left_out(problem: str) -> None:
        note(f"{path} {problem}; that run is left out of {plot}")

    try:
        table = read_text_table(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        return left_out(f"cannot be read as a CSV table ({str(error).strip()})")
    missing = [c for c in (*numeric, *text) if c not in table.columns]
    if missing:
        return left_out(f"lacks the column(s) {', '.join(missing)}")
    if table.empty:
        return left_out("has no rows")
    for column in numeric:
        numbers = pd.to_numeric(table[column].where(table[column] != ""), errors="coerce")
        damaged = numbers.isna() & (table[column] != "")
        if damaged.any():
            first = damaged.idxmax()
            return left_out(f"has {table.at[first, column]!r} in column {column} (line {first + 2}), not a number")
        table[column] = numbers
    return table


def weight_curves(runs: pd.DataFrame, settings: list[str]) -> dict[str, pd.DataFrame]:
    """Per setting, at its highest noise rate: the mean over seeds of the clean and corrupted
    examples' weight curves (windows where every step was skipped have no value and are left out)."""
    if not {"noise_rate", "run_dir"} <= set(runs.columns):
        return {}
    noisy = runs[pd.to_numeric(runs.noise_rate, errors="coerce") > 0]
    noisy = noisy[noisy.run_dir.map(lambda d: has_file(d, METRICS)).astype(bool)]
    panels = [c for c in settings if c != "noise_rate"]
    curves = {}
    for key, group in sorted_groups(noisy, panels):
        rate = max(group.noise_rate, key=float)
        seeds = group[group.noise_rate == rate]
        metrics = [read_run_csv(Path(d) / METRICS, ("step", "weight_clean", "weight_noisy"), WEIGHT_CURVES)
                   for d in seeds.run_dir]
        metrics = [m for m in metrics if m is not None]
        if metrics:
            title = f"{setting_label(panels, key)}\nnoise_rate={rate}, {len(metrics)} seed(s)"
            curves[title] = pd.concat(metrics).groupby("step")[["weight_clean", "weight_noisy"]].mean()
    return curves


def learning_curves(runs: pd.DataFrame, settings: list[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """Per setting but the method, per method: the mean and std over seeds of test balanced
    accuracy at each evaluation (from each run's metrics.csv)."""
    if "run_dir" not in runs.columns:
        return {}
    runs = runs[runs.run_dir.map(lambda d: has_file(d, METRICS)).astype(bool)]
    # a method's own options, and a column with one value per method (each method's own lr, say),
    # name lines, not panels
    per_method = [c for c in settings if c != "method"
                  and (c.startswith("method.") or (runs.groupby("method")[c].nunique() == 1).all())]
    line_columns = ["method", *per_method]
    panel_columns = [c for c in settings if c not in line_columns]
    groups = sorted_groups(runs, panel_columns) if panel_columns else [((), runs)]
    panels = {}
    for key, group in groups:
        lines = {}
        for line, seeds in sorted_groups(group, line_columns):
            metrics = [read_run_csv(Path(d) / METRICS, ("step", "balanced_accuracy"), LEARNING_CURVES)
                       for d in seeds.run_dir]
            metrics = [m for m in metrics if m is not None]
            if metrics:
                curve = pd.concat(metrics).groupby("step").balanced_accuracy.agg(["mean", "std", "size"])
                seeds_label = f"{len(metrics)} seed{'' if len(metrics) == 1 else 's'}"
                lines[f"{setting_label(line_columns, line)} ({seeds_label})"] = curve
        if lines:
            panels[setting_label(panel_columns, key) if panel_columns else "all runs"] = lines
    return panels


def plot_learning_curves(panels: dict[str, dict[str, pd.DataFrame]], path: Path) -> bool:
    """Test balanced accuracy over training, a line (mean, shaded ± std over seeds) per method and
    a panel per setting: where methods cross, a single final number would mislead."""
    def draw(axes, lines: dict[str, pd.DataFrame]) -> None:
        for label, curve in lines.items():
            axes.plot(curve.index, curve["mean"], marker=".", label=label)
            spread = curve["std"].fillna(0)
            axes.fill_between(curve.index, curve["mean"] - spread, curve["mean"] + spread, alpha=0.2)

    return plot_step_panels(panels, draw, "balanced accuracy (test)", path)


def plot_step_panels(panels: dict, draw, ylabel: str, path: Path) -> bool:
    """A panel per entry of `panels` (its title and what `draw(axes, value)` plots against the
    step), sharing the y axis; False when there is nothing to plot."""
    if not panels:
        return False
    figure, grid = panel_grid(len(panels), sharey=True)
    for axes, (title, value) in zip(grid.flat, panels.items()):
        draw(axes, value)
        axes.set_title(wrapped(title), fontsize="small")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    for axes in grid[:, 0]:
        axes.set_ylabel(ylabel)
    save(figure, path)
    return True


def panel_grid(count: int, sharey: bool):
    """A figure with `count` panels, at most 4 a row (the unused ones hidden)."""
    columns = min(count, 4)
    rows = -(-count // columns)
    figure, panels = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), sharey=sharey, squeeze=False)
    for axes in panels.flat[count:]:
        axes.set_visible(False)
    return figure, panels


def plot_weight_curves(curves: dict[str, pd.DataFrame], path: Path) -> bool:
    """Mean weight (1 = uniform) of clean vs corrupted training examples over training, a panel per setting."""
    def draw(axes, curve: pd.DataFrame) -> None:
        axes.plot(curve.index, curve.weight_clean, marker=".", label="clean examples")
        axes.plot(curve.index, curve.weight_noisy, marker=".", label="corrupted examples")
        axes.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")

    return plot_step_panels(curves, draw, "mean weight (1 = uniform)", path)


def mean_example_weights(runs: pd.DataFrame, settings: list[str]) -> dict[str, pd.DataFrame]:
    """Per setting of the runs of methods that weigh each example on their own (L2RW, Meta-Weight-Net):
    each training example's mean weight over its run, pooled over seeds (examples that were in no
    update have none and are left out)."""
    if "run_dir" not in runs.columns:
        return {}
    weighing = runs[runs.method.map(learns_example_weights).astype(bool)]
    present = weighing.run_dir.map(lambda d: has_file(d, EXAMPLE_WEIGHTS)).astype(bool)
    if (~present).any():
        methods = "/".join(sorted(set(weighing.method[~present])))
        note(f"{(~present).sum()} {methods} run(s) have no {EXAMPLE_WEIGHTS} in their run_dir (e.g. "
             f"{row_name(runs, present.index[~present][0])}: written before the file existed, or moved since); "
             f"they are left out of {HISTOGRAM}")
    weighing = weighing[present]
    panels = {}
    for key, group in sorted_groups(weighing, settings):
        tables = [read_run_csv(Path(d) / EXAMPLE_WEIGHTS, ("corrupted", "mean_weight"), HISTOGRAM, text=("class",))
                  for d in group.run_dir]
        tables = [t for t in tables if t is not None]
        if tables:
            examples = pd.concat(tables).dropna(subset=["mean_weight"])
            panels[f"{setting_label(settings, key)}\n{len(tables)} seed(s), {len(examples)} examples"] = examples
    return panels


def weight_groups(examples: pd.DataFrame) -> dict[str, pd.Series]:
    """Clean vs corrupted examples when noise corrupted any, else one group per class (a group
    without examples is left out)."""
    corrupted = examples.corrupted > 0
    if corrupted.any():
        groups = {"clean examples": examples.mean_weight[~corrupted], "corrupted examples": examples.mean_weight[corrupted]}
    else:
        groups = {f"class {name}": group.mean_weight for name, group in examples.groupby("class", sort=False)}
    return {label: weights for label, weights in groups.items() if len(weights)}


def plot_example_weights(panels: dict[str, pd.DataFrame], path: Path) -> bool:
    """Histograms of the examples' mean weights, each group's bars as its share of the group, so
    that a small group (corrupted examples, a minority class) reads on the same scale as a large one."""
    panels = {title: examples for title, examples in panels.items() if len(examples)}
    if not panels:
        return False
    figure, grid = panel_grid(len(panels), sharey=False)
    for axes, (title, examples) in zip(grid.flat, panels.items()):
        bins = np.histogram_bin_edges(examples.mean_weight, bins=HISTOGRAM_BINS)
        groups = weight_groups(examples)
        for label, weights in groups.items():
            axes.hist(weights, bins=bins, weights=np.full(len(weights), 1 / len(weights)), histtype="step", label=label)
        axes.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axes.set_title(wrapped(title), fontsize="small")
        axes.set_xlabel("mean weight over the run (1 = uniform)")
        axes.grid(alpha=0.3)
        if len(groups) <= 12:  # a legend of more classes would hide the bars
            axes.legend(fontsize="x-small")
    for axes in grid[:, 0]:
        axes.set_ylabel("share of the group's examples")
    save(figure, path)
    return True


def wrapped(title: str) -> str:
    """A panel title in lines of at most 50 characters, its own line breaks kept."""
    return "\n".join(textwrap.fill(line, 50) for line in title.splitlines())


def save(figure, path: Path) -> None:
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    plt.close(figure)
    write_replacing(path, png.getvalue())


def write_report(results: Path, out: Path) -> list[Path]:
    """Write report.md and the plots into `out`; return the files written."""
    summary = summarise_table(load_results(results), results)
    if summary.not_numbers:
        note(f"{results}: {len(summary.not_numbers)} row(s) with status ok have an accuracy or balanced_accuracy "
             f"that is not a number ({', '.join(summary.not_numbers)}); they are left out of the report")
    for name in REPORT_FILES:  # all of them before any is written: a refusal leaves the folder as it was
        check_replaceable(out / name, f"--out {out}: {name}", "a file l2rw-report wrote")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot make this folder ({error.strerror}); choose another path") from None
    written = [out / REPORT]
    write_replacing(written[0], markdown_report(results, summary).encode())
    for x in AXES:
        path = out / f"balanced_accuracy_vs_{x}.png"
        if plot_against(summary.means, summary.settings, x, path):
            written.append(path)
        else:
            skip(path, f"`{x}` is absent or the same in every run of {results}")
    plots = [
        (LEARNING_CURVES, plot_learning_curves, learning_curves, "no run with a readable run_dir/metrics.csv"),
        (WEIGHT_CURVES, plot_weight_curves, weight_curves, "no noisy run with a readable run_dir/metrics.csv"),
        (HISTOGRAM, plot_example_weights, mean_example_weights, f"no l2rw or mwnet run with a readable run_dir/{EXAMPLE_WEIGHTS}"),
    ]
    for name, plot, read, reason in plots:
        path = out / name
        if plot(read(summary.runs, summary.settings), path):
            written.append(path)
        else:
            skip(path, reason)
    return written


def skip(plot: Path, reason: str) -> None:
    """Say why `plot` is not drawn, and remove an earlier report's copy, which would pass for this one's."""
    remove_written(plot)
    note(f"{reason}; skipped {plot.name}")


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
