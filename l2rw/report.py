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
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l2rw.errors import UserError
from l2rw.results import OUTCOME_COLUMNS

REQUIRED = ("method", "seed", "status", "accuracy", "balanced_accuracy")
METRICS = ("accuracy", "balanced_accuracy", "val_balanced_accuracy", "best_balanced_accuracy", "seconds_per_step")
RESULT_METRICS = ("accuracy", "balanced_accuracy")  # a finished run without these as numbers has no result
# x axis of each "balanced accuracy vs ..." plot: the results column, and its label
AXES = {"imbalance": "imbalance (majority class share)", "noise_rate": "noise rate", "meta_per_class": "meta images per class"}
WEIGHT_CURVES = "weights_clean_vs_noisy.png"
EXAMPLE_WEIGHTS = "example_weights.csv"  # per training example of a run: its mean weight over the run
HISTOGRAM = "example_weights_histogram.png"
HISTOGRAM_BINS = 30
LEARNING_CURVES = "learning_curves.png"
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


def setting_label(columns: list[str], key) -> str:
    """`method, column=value, ...`; a column the setting leaves empty (not read by its runs) is left out."""
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(v if c == "method" else f"{c}={v}" for c, v in zip(columns, key) if v != "")


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
    noisy = noisy[noisy.run_dir.map(lambda d: has_file(d, "metrics.csv")).astype(bool)]
    panels = [c for c in settings if c != "noise_rate"]
    curves = {}
    for key, group in sorted_groups(noisy, panels):
        rate = max(group.noise_rate, key=float)
        seeds = group[group.noise_rate == rate]
        metrics = [read_run_csv(Path(d) / "metrics.csv", ("step", "weight_clean", "weight_noisy"), WEIGHT_CURVES)
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
    runs = runs[runs.run_dir.map(lambda d: has_file(d, "metrics.csv")).astype(bool)]
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
            metrics = [read_run_csv(Path(d) / "metrics.csv", ("step", "balanced_accuracy"), LEARNING_CURVES)
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
    """Per setting of the l2rw runs: each training example's mean weight over its run, pooled over
    seeds (examples that were in no update have none and are left out)."""
    if "run_dir" not in runs.columns:
        return {}
    l2rw = runs[runs.method == "l2rw"]
    present = l2rw.run_dir.map(lambda d: has_file(d, EXAMPLE_WEIGHTS)).astype(bool)
    if (~present).any():
        note(f"{(~present).sum()} l2rw run(s) have no {EXAMPLE_WEIGHTS} in their run_dir (e.g. "
             f"{row_name(runs, present.index[~present][0])}: written before the file existed, or moved since); "
             f"they are left out of {HISTOGRAM}")
    l2rw = l2rw[present]
    panels = {}
    for key, group in sorted_groups(l2rw, settings):
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
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(results: Path, out: Path) -> list[Path]:
    """Write report.md and the plots into `out`; return the files written."""
    summary = summarise_table(load_results(results), results)
    if summary.not_numbers:
        note(f"{results}: {len(summary.not_numbers)} row(s) with status ok have an accuracy or balanced_accuracy "
             f"that is not a number ({', '.join(summary.not_numbers)}); they are left out of the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot make this folder ({error.strerror}); choose another path") from None
    written = [out / "report.md"]
    written[0].write_text(markdown_report(results, summary))
    for x in AXES:
        path = out / f"balanced_accuracy_vs_{x}.png"
        if plot_against(summary.means, summary.settings, x, path):
            written.append(path)
        else:
            skip(path, f"`{x}` is absent or the same in every run of {results}")
    plots = [
        (LEARNING_CURVES, plot_learning_curves, learning_curves, "no run with a readable run_dir/metrics.csv"),
        (WEIGHT_CURVES, plot_weight_curves, weight_curves, "no noisy run with a readable run_dir/metrics.csv"),
        (HISTOGRAM, plot_example_weights, mean_example_weights, f"no l2rw run with a readable run_dir/{EXAMPLE_WEIGHTS}"),
    ]
    for name, plot, read, reason in plots:
        path = out / name
        if plot(read(summary.runs, summary.settings), path):
            written.append(path)
        else:
            skip(path, reason)
    return written


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def skip(plot: Path, reason: str) -> None:
    """Say why `plot` is not drawn, and remove an earlier report's copy, which would pass for this one's."""
    plot.unlink(missing_ok=True)
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
