"""l2rw-report on a hand-made results CSV whose means and stds are known."""
import pandas as pd
import pytest

from l2rw.report import load_results, main, summarise

COLUMNS = ["run_id", "dataset", "method", "imbalance", "noise_kind", "noise_rate", "meta_per_class", "seed",
           "method.meta_batch_size", "run_dir", "status", "accuracy", "balanced_accuracy", "seconds_per_step"]


def batch_size(method: str, i: int) -> str:
    """sgd has none; one l2rw row as a results file rewritten by an older version held it"""
    return "" if method == "sgd" else "100.0" if i == 3 else "100"


def results_csv(tmp_path):
    """sgd at (0.5, 0.0, 3) over seeds 0-2; l2rw at three settings; one diverged run."""
    run = tmp_path / "noisy_run"
    run.mkdir()
    pd.DataFrame({"step": [100, 200], "weight_clean": [1.1, 1.3], "weight_noisy": [0.7, 0.2]}).to_csv(
        run / "metrics.csv", index=False)
    rows = [
        ("sgd", 0.5, 0.0, 3, 0, "", "ok", 0.80, 0.70),
        ("sgd", 0.5, 0.0, 3, 1, "", "ok", 0.90, 0.80),
        ("sgd", 0.5, 0.0, 3, 2, "", "ok", 0.85, 0.75),
        ("l2rw", 0.5, 0.0, 3, 0, "", "ok", 0.90, 0.60),
        ("l2rw", 0.5, 0.0, 3, 1, "", "ok", 0.80, 0.70),
        ("l2rw", 0.5, 0.0, 3, 2, "", "diverged", "", ""),
        ("l2rw", 0.9, 0.0, 3, 0, "", "ok", 0.50, 0.40),
        ("l2rw", 0.9, 0.4, 10, 0, str(run), "ok", 0.45, 0.30),
    ]
    table = pd.DataFrame(
        [(f"r{i}", "digits", m, imb, "uniform", rate, meta, seed, batch_size(m, i), run_dir, status,
          acc, bacc, 0.01) for i, (m, imb, rate, meta, seed, run_dir, status, acc, bacc) in enumerate(rows)],
        columns=COLUMNS,
    )
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    return path


def test_table_means_and_stds_over_seeds(tmp_path, capsys):
    path = results_csv(tmp_path)
    main([str(path), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    header, rule, *rows = [line for line in report.splitlines() if line.startswith("|")]
    # method.meta_batch_size (100 = 100.0) only follows the method: not a setting; dataset is fixed
    assert header == "| method | imbalance | noise_rate | meta_per_class | accuracy | balanced accuracy | s/step | seeds |"
    assert rows == [
        "| l2rw | 0.5 | 0 | 3 | 0.850 ± 0.071 | 0.650 ± 0.071 | 0.0100 | 2 |",  # the diverged seed left out
        "| l2rw | 0.9 | 0 | 3 | 0.500 | 0.400 | 0.0100 | 1 |",
        "| l2rw | 0.9 | 0.4 | 10 | 0.450 | 0.300 | 0.0100 | 1 |",
        "| sgd | 0.5 | 0 | 3 | 0.850 ± 0.050 | 0.750 ± 0.050 | 0.0100 | 3 |",
    ]
    assert "dataset=digits" in report and "1 diverged" in report


def test_summary_numbers(tmp_path):
    table = load_results(results_csv(tmp_path))
    table = table[table.status == "ok"]
    summary = summarise(table, ["method", "imbalance"]).set_index(["method", "imbalance"])
    assert summary.loc[("sgd", "0.5"), "balanced_accuracy_mean"] == pytest.approx(0.75)
    assert summary.loc[("sgd", "0.5"), "balanced_accuracy_std"] == pytest.approx(0.05)  # sample std, ddof=1
    assert summary.loc[("l2rw", "0.9"), "accuracy_mean"] == pytest.approx(0.475)
    assert summary.loc[("l2rw", "0.9"), "seeds"] == 2


def test_every_plot_is_written_and_is_a_png(tmp_path, capsys):
    main([str(results_csv(tmp_path)), "--out", str(tmp_path / "report")])
    names = ["balanced_accuracy_vs_imbalance", "balanced_accuracy_vs_noise_rate",
             "balanced_accuracy_vs_meta_per_class", "weights_clean_vs_noisy"]
    for name in names:
        data = (tmp_path / "report" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert "note:" not in capsys.readouterr().err


def test_a_sweep_without_noise_still_reports_and_says_what_it_skipped(tmp_path, capsys):
    path = results_csv(tmp_path)
    main([str(path), "--out", str(tmp_path / "report")])  # an earlier report, with every plot, in the same folder
    pd.read_csv(path).assign(noise_rate=0.0).to_csv(path, index=False)
    main([str(path), "--out", str(tmp_path / "report")])
    written = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert written == ["balanced_accuracy_vs_imbalance.png", "balanced_accuracy_vs_meta_per_class.png", "report.md"]
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


def test_the_report_knows_every_per_run_column(make_cfg, tmp_path):
    """A column train() writes is either a config choice or listed in OUTCOME_COLUMNS, or the
    report would split seeds of one setting into groups by it."""
    from l2rw.results import OUTCOME_COLUMNS
    from l2rw.train import config_columns, train

    cfg = make_cfg("steps=2", "eval_every=1")
    row = train(cfg, tmp_path / "run")
    assert set(row) - set(config_columns(cfg)) <= set(OUTCOME_COLUMNS)


def test_an_out_path_that_is_a_file_exits_2_naming_it(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(SystemExit) as exit_:
        main([str(results_csv(tmp_path)), "--out", str(taken)])
    assert exit_.value.code == 2
    assert f"--out {taken}: cannot make this folder" in capsys.readouterr().err
