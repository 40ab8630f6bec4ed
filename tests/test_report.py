"""l2rw-report on a hand-made results CSV whose means and stds are known, and on damaged inputs."""
import contextlib
import io

import pandas as pd
import pytest

from l2rw.file_io import WRITTEN
from l2rw.results.read import load_results, summarise
from l2rw.results.report import learning_curves, main, mean_example_weights, weight_curves, weight_groups

COLUMNS = ["run_id", "dataset", "method", "imbalance", "noise_kind", "noise_rate", "meta_per_class", "seed",
           "method.meta_batch_size", "run_dir", "status", "accuracy", "balanced_accuracy", "seconds_per_step"]
PLOTS = ["balanced_accuracy_vs_imbalance", "balanced_accuracy_vs_noise_rate", "balanced_accuracy_vs_meta_per_class",
         "weights_clean_vs_noisy", "example_weights_histogram", "learning_curves"]
# example_weights.csv of each l2rw run dir: (class, corrupted, mean_weight); "" = in no update
EXAMPLES = {
    "l2rw_a_seed0": [("0", 0, 1.0), ("0", 0, 2.0), ("1", 0, 0.5)],
    "l2rw_a_seed1": [("0", 0, 1.0), ("1", 0, 0.3), ("1", 0, "")],
    "l2rw_b": [("0", 0, 0.8), ("1", 0, 1.2)],
    "noisy_run": [("0", 0, 1.5), ("0", 1, 0.1), ("1", 0, 1.2), ("1", 1, "")],
}


def batch_size(method: str, i: int) -> str:
    """sgd has none; one l2rw row as a results file rewritten by an older version held it"""
    return "" if method == "sgd" else "100.0" if i == 3 else "100"


def write_example_weights(run, examples):
    rows = [(i, c, bad, w, 0.0 if w != "" else "", 10 if w != "" else 0) for i, (c, bad, w) in enumerate(examples)]
    pd.DataFrame(rows, columns=["index", "class", "corrupted", "mean_weight", "zero_share", "steps_seen"]).to_csv(
        run / "example_weights.csv", index=False)


def results_csv(tmp_path):
    """sgd at (0.5, 0.0, 3) over seeds 0-2; l2rw at three settings; one diverged run."""
    for name, examples in EXAMPLES.items():
        (tmp_path / name).mkdir()
        write_example_weights(tmp_path / name, examples)
    pd.DataFrame({"step": [100, 200], "balanced_accuracy": [0.2, 0.3], "weight_clean": [1.1, 1.3],
                  "weight_noisy": [0.7, 0.2]}).to_csv(tmp_path / "noisy_run" / "metrics.csv", index=False)
    for run, curve in {"l2rw_a_seed0": [0.4, 0.6], "l2rw_a_seed1": [0.5, 0.8]}.items():
        pd.DataFrame({"step": [100, 200], "balanced_accuracy": curve}).to_csv(tmp_path / run / "metrics.csv", index=False)
    rows = [
        ("sgd", 0.5, 0.0, 3, 0, "", "ok", 0.80, 0.70),
        ("sgd", 0.5, 0.0, 3, 1, "", "ok", 0.90, 0.80),
        ("sgd", 0.5, 0.0, 3, 2, "", "ok", 0.85, 0.75),
        ("l2rw", 0.5, 0.0, 3, 0, "l2rw_a_seed0", "ok", 0.90, 0.60),
        ("l2rw", 0.5, 0.0, 3, 1, "l2rw_a_seed1", "ok", 0.80, 0.70),
        ("l2rw", 0.5, 0.0, 3, 2, "", "diverged", "", ""),
        ("l2rw", 0.9, 0.0, 3, 0, "l2rw_b", "ok", 0.50, 0.40),
        ("l2rw", 0.9, 0.4, 10, 0, "noisy_run", "ok", 0.45, 0.30),
    ]
    table = pd.DataFrame(
        [(f"r{i}", "digits", m, imb, "uniform", rate, meta, seed, batch_size(m, i), run_dir and str(tmp_path / run_dir),
          status, acc, bacc, 0.01) for i, (m, imb, rate, meta, seed, run_dir, status, acc, bacc) in enumerate(rows)],
        columns=COLUMNS,
    )
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    return path


def report(tmp_path, path) -> tuple[str, list[str]]:
    """report.md's text and the names of the files written (not the record of them), after `l2rw-report path`."""
    main([str(path), "--out", str(tmp_path / "report")])
    files = (p for p in (tmp_path / "report").iterdir() if p.name != WRITTEN)
    return (tmp_path / "report" / "report.md").read_text(), sorted(p.stem for p in files)


@pytest.fixture(scope="module")
def whole_report(tmp_path_factory) -> tuple[str, dict[str, bytes], str]:
    """`l2rw-report` on the undamaged results: report.md's text, each file it wrote, and its stderr.
    Drawing the plots takes seconds, so the tests that only read what it wrote share one run."""
    folder = tmp_path_factory.mktemp("whole_report")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        main([str(results_csv(folder)), "--out", str(folder / "report")])
    files = {path.name: path.read_bytes() for path in (folder / "report").iterdir()}
    return files["report.md"].decode(), files, err.getvalue()


def test_table_means_and_stds_over_seeds(whole_report):
    text, _, _ = whole_report
    header, rule, *rows = [line for line in text.splitlines() if line.startswith("|")]
    # method.meta_batch_size (100 = 100.0) only follows the method: not a setting; dataset is fixed
    assert header == "| method | imbalance | noise_rate | meta_per_class | accuracy | balanced accuracy | s/step | seeds |"
    assert rows == [
        "| l2rw | 0.5 | 0 | 3 | 0.850 ± 0.071 | 0.650 ± 0.071 | 0.0100 | 2 |",  # the diverged seed left out
        "| l2rw | 0.9 | 0 | 3 | 0.500 | 0.400 | 0.0100 | 1 |",
        "| l2rw | 0.9 | 0.4 | 10 | 0.450 | 0.300 | 0.0100 | 1 |",
        "| sgd | 0.5 | 0 | 3 | 0.850 ± 0.050 | 0.750 ± 0.050 | 0.0100 | 3 |",
    ]
    assert "dataset=digits" in text and "1 diverged" in text


@pytest.mark.slow
def test_validation_scores_and_collapsed_runs_get_columns_where_the_runs_have_them(tmp_path):
    path = results_csv(tmp_path)
    table = pd.read_csv(path)
    table["val_balanced_accuracy"] = [0.6, 0.7, 0.8, 0.5, 0.5, "", 0.3, ""]
    table["collapsed_step"] = ["", "", "", 400, "", "", "", ""]
    table.to_csv(path, index=False)
    text, _ = report(tmp_path, path)
    header, rule, *rows = [line for line in text.splitlines() if line.startswith("|")]
    assert header.endswith("| balanced accuracy | val balanced accuracy | s/step | seeds | collapsed |")
    assert rows == [
        "| l2rw | 0.5 | 0 | 3 | 0.850 ± 0.071 | 0.650 ± 0.071 | 0.500 ± 0.000 | 0.0100 | 2 | 1 |",
        "| l2rw | 0.9 | 0 | 3 | 0.500 | 0.400 | 0.300 | 0.0100 | 1 | 0 |",
        "| l2rw | 0.9 | 0.4 | 10 | 0.450 | 0.300 | – | 0.0100 | 1 | 0 |",
        "| sgd | 0.5 | 0 | 3 | 0.850 ± 0.050 | 0.750 ± 0.050 | 0.700 ± 0.100 | 0.0100 | 3 | 0 |",
    ]


def test_summary_numbers(tmp_path):
    table = load_results(results_csv(tmp_path))
    table = table[table.status == "ok"]
    summary = summarise(table, ["method", "imbalance"]).set_index(["method", "imbalance"])
    assert summary.loc[("sgd", "0.5"), "balanced_accuracy_mean"] == pytest.approx(0.75)
    assert summary.loc[("sgd", "0.5"), "balanced_accuracy_std"] == pytest.approx(0.05)  # sample std, ddof=1
    assert summary.loc[("l2rw", "0.9"), "accuracy_mean"] == pytest.approx(0.475)
    assert summary.loc[("l2rw", "0.9"), "seeds"] == 2


def test_every_plot_is_written_and_is_a_png(whole_report):
    _, files, err = whole_report
    for name in PLOTS:
        data = files[f"{name}.png"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert "note:" not in err


@pytest.mark.slow
def test_a_sweep_without_noise_still_reports_and_says_what_it_skipped(tmp_path, capsys):
    path = results_csv(tmp_path)
    report(tmp_path, path)  # an earlier report, with every plot, in the same folder
    pd.read_csv(path).assign(noise_rate=0.0).to_csv(path, index=False)
    _, written = report(tmp_path, path)
    assert written == ["balanced_accuracy_vs_imbalance", "balanced_accuracy_vs_meta_per_class",
                       "example_weights_histogram", "learning_curves", "report"]
    err = capsys.readouterr().err
    assert "skipped balanced_accuracy_vs_noise_rate.png" in err and "skipped weights_clean_vs_noisy.png" in err


@pytest.mark.parametrize("drop, message", [("balanced_accuracy", "balanced_accuracy"), ("seed", "seed")])
def test_missing_column_exits_2_naming_it(tmp_path, capsys, drop, message):
    path = results_csv(tmp_path)
    pd.read_csv(path).drop(columns=drop).to_csv(path, index=False)
    with pytest.raises(SystemExit) as exit_:
        main([str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_an_out_path_that_is_a_file_exits_2_naming_it(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(SystemExit) as exit_:
        main([str(results_csv(tmp_path)), "--out", str(taken)])
    assert exit_.value.code == 2
    assert f"--out {taken}: cannot make this folder" in capsys.readouterr().err


@pytest.mark.slow  # l2rw-report end to end, every plot drawn
def test_rows_whose_accuracy_is_not_a_number_are_named_and_left_out(tmp_path, capsys):
    path = results_csv(tmp_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[0, "accuracy"] = "abc"          # run_id r0: sgd, seed 0
    table.loc[1, "balanced_accuracy"] = ""    # run_id r1: sgd, seed 1
    table.loc[2, "run_id"] = ""               # named by its line instead
    table.loc[2, "accuracy"] = "inf"
    table.loc[3, "seconds_per_step"] = "?"    # l2rw seed 0 at 0.5: its speed is unknown, its result is not
    table.loc[4, "seconds_per_step"] = ""
    table.to_csv(path, index=False)
    text, _ = report(tmp_path, path)
    assert "nan" not in text.lower()
    assert "| sgd |" not in text  # every sgd row is damaged
    assert "| l2rw | 0.5 | 0 | 3 | 0.850 ± 0.071 | 0.650 ± 0.071 | – | 2 |" in text
    assert "3 run(s) with status ok whose accuracy or balanced_accuracy is not a number (run_id r0, run_id r1, line 4)" in text
    err = capsys.readouterr().err
    assert "(run_id r0, run_id r1, line 4); they are left out of the report" in err and "Traceback" not in err


def test_no_row_with_a_numeric_accuracy_exits_2_naming_the_rows(tmp_path, capsys):
    path = results_csv(tmp_path)
    pd.read_csv(path).assign(accuracy="n/a").to_csv(path, index=False)
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--out", str(tmp_path / "report")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "has no run with status ok (rows whose accuracy is not a number: run_id r0" in err


@pytest.mark.parametrize("content, problem", [
    (b"", "cannot be read as a CSV table"),
    (b"step,weight_clean,weight_noisy\n", "has no rows"),
    (b"step,weight_clean\n100,1.1\n", "lacks the column(s) weight_noisy"),
    (b"step,weight_clean,weight_noisy\n100,1.1,0.7\n200,abc,0.2\n", "has 'abc' in column weight_clean (line 3), not a number"),
    (b"step,weight_clean,weight_noisy\n100,1.1,0.7,9,9\n", "cannot be read as a CSV table"),
    (b"\xff\xfe\x00\x81garbage\x00\n\x9c", "cannot be read as a CSV table"),
])
def test_a_damaged_metrics_csv_is_named_and_its_run_left_out(tmp_path, capsys, content, problem):
    runs = load_results(results_csv(tmp_path))
    metrics = tmp_path / "noisy_run" / "metrics.csv"
    metrics.write_bytes(content)
    assert weight_curves(runs[runs.status == "ok"], ["method", "noise_rate"]) == {}
    err = capsys.readouterr().err
    assert err.startswith(f"note: {metrics} {problem}") and "that run is left out of weights_clean_vs_noisy.png" in err


@pytest.mark.slow  # l2rw-report end to end, every other plot drawn
def test_l2rw_report_skips_the_plot_of_a_damaged_metrics_csv(tmp_path, capsys):
    path = results_csv(tmp_path)
    (tmp_path / "noisy_run" / "metrics.csv").write_text("")
    _, written = report(tmp_path, path)
    assert "weights_clean_vs_noisy" not in written and "example_weights_histogram" in written
    err = capsys.readouterr().err
    assert "skipped weights_clean_vs_noisy.png" in err and "Traceback" not in err


def test_example_weights_are_pooled_over_seeds_per_setting(tmp_path):
    runs = load_results(results_csv(tmp_path))
    runs = runs[runs.status == "ok"]
    panels = mean_example_weights(runs, ["method", "imbalance", "noise_rate"])
    assert list(panels) == [
        "l2rw, imbalance=0.5, noise_rate=0\n2 seed(s), 5 examples",  # the example in no update left out
        "l2rw, imbalance=0.9, noise_rate=0\n1 seed(s), 2 examples",
        "l2rw, imbalance=0.9, noise_rate=0.4\n1 seed(s), 3 examples",
    ]
    clean, _, noisy = panels.values()
    by_class = weight_groups(clean)  # no corrupted example: one group per class
    assert {k: v.tolist() for k, v in by_class.items()} == {"class 0": [1.0, 2.0, 1.0], "class 1": [0.5, 0.3]}
    by_noise = weight_groups(noisy)
    assert {k: v.tolist() for k, v in by_noise.items()} == {"clean examples": [1.5, 1.2], "corrupted examples": [0.1]}
    only_corrupted = weight_groups(noisy[noisy.corrupted > 0])  # no clean example: no empty group to draw
    assert {k: v.tolist() for k, v in only_corrupted.items()} == {"corrupted examples": [0.1]}


@pytest.mark.slow  # l2rw-report end to end, every other plot drawn
def test_missing_or_damaged_example_weights_are_named_and_the_histogram_skipped(tmp_path, capsys):
    path = results_csv(tmp_path)
    for name in ("l2rw_a_seed0", "l2rw_a_seed1", "l2rw_b"):
        (tmp_path / name / "example_weights.csv").unlink()
    damaged = tmp_path / "noisy_run" / "example_weights.csv"
    damaged.write_text("index,class,corrupted,mean_weight\n0,0,yes,1.0\n")
    _, written = report(tmp_path, path)
    assert "example_weights_histogram" not in written
    err = capsys.readouterr().err
    assert "note: 3 l2rw run(s) have no example_weights.csv in their run_dir (e.g. run_id r3" in err
    assert f"note: {damaged} has 'yes' in column corrupted (line 2), not a number" in err
    assert "skipped example_weights_histogram.png" in err and "Traceback" not in err


def test_learning_curves_average_each_methods_seeds_per_setting(tmp_path):
    runs = load_results(results_csv(tmp_path))
    panels = learning_curves(runs[runs.status == "ok"], ["method", "imbalance", "noise_rate", "meta_per_class"])
    assert list(panels) == ["imbalance=0.5, noise_rate=0, meta_per_class=3", "imbalance=0.9, noise_rate=0.4, meta_per_class=10"]
    curve = panels["imbalance=0.5, noise_rate=0, meta_per_class=3"]["l2rw (2 seeds)"]
    assert curve["mean"].tolist() == pytest.approx([0.45, 0.7])
    assert curve["std"].tolist() == pytest.approx([0.0707107, 0.1414214], rel=1e-5)
    assert list(panels["imbalance=0.9, noise_rate=0.4, meta_per_class=10"]) == ["l2rw (1 seed)"]


def test_a_column_set_per_method_names_lines_not_panels(tmp_path):
    """Each method at its own lr, and l2rw's own options, share one panel per data setting."""
    rows = []
    for method, lr, smoothing in [("sgd", "0.3", ""), ("l2rw", "0.1", "0.9"), ("l2rw", "0.1", "0")]:
        for imbalance in ("0.5", "0.9"):
            run = tmp_path / f"{method}_{smoothing}_{imbalance}"
            run.mkdir()
            pd.DataFrame({"step": [100], "balanced_accuracy": [0.5]}).to_csv(run / "metrics.csv", index=False)
            rows.append({"method": method, "lr": lr, "method.smoothing": smoothing, "imbalance": imbalance,
                         "run_dir": str(run)})
    panels = learning_curves(pd.DataFrame(rows), ["method", "lr", "method.smoothing", "imbalance"])
    assert list(panels) == ["imbalance=0.5", "imbalance=0.9"]
    assert list(panels["imbalance=0.9"]) == [
        "l2rw, lr=0.1, method.smoothing=0 (1 seed)", "l2rw, lr=0.1, method.smoothing=0.9 (1 seed)", "sgd, lr=0.3 (1 seed)",
    ]
