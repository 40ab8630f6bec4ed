"""End to end through the command line and through train(): a run's files and row, a sweep's rows
when one of its jobs fails, exit codes, reproducibility."""
import json
import re

import pandas as pd
import pytest

from l2rw.errors import UserError
from l2rw.run.train import train
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST


@pytest.mark.slow
def test_one_run_writes_run_dir_files_and_one_row(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli("method=l2rw", *FAST, f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("config.yaml", "metrics.csv", "summary.json", "confusion.csv"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    rows = pd.read_csv(results)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.method, row.dataset, row.model, row.status) == ("l2rw", "digits", "lenet", "ok")
    # the scores are those of the confusion matrix the run wrote: recall per class, and its mean
    confusion = pd.read_csv(tmp_path / "run" / "confusion.csv", index_col=0).to_numpy()
    recall = confusion.diagonal() / confusion.sum(1)
    assert [float(r) for r in str(row.per_class_recall).split()] == pytest.approx(recall, abs=5e-5)
    assert row.balanced_accuracy == pytest.approx(recall.mean(), abs=1e-6)
    assert row.accuracy == pytest.approx(confusion.trace() / confusion.sum(), abs=1e-6)
    # the steady steps (after L2RW's one warm-up step) and the warm-up fit inside the run's wall time
    assert 0 < row.seconds_per_step * (20 - 1) + row.warmup_seconds <= row.wall_seconds
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics.step.tolist() == [10, 20]
    assert metrics.balanced_accuracy.iloc[-1] == pytest.approx(row.balanced_accuracy, abs=1e-6)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["balanced_accuracy"] == row.balanced_accuracy


@pytest.mark.slow
def test_a_diverged_job_keeps_its_row_and_the_sweep_goes_on(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "lr=1e30,0.1", "momentum=0.9", "schedule=constant", *FAST,
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("error: training diverged") == 1 and "Traceback" not in done.stderr
    rows = pd.read_csv(results)
    assert rows.lr.tolist() == [1e30, 0.1] and rows.status.tolist() == ["diverged", "ok"]
    assert 1 <= rows.diverged_step.iloc[0] <= 20 and rows.run_dir.nunique() == 2


@pytest.mark.slow
def test_a_bad_job_stops_the_sweep_and_the_rows_before_it_stay(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "momentum=0.5,-1,0.9", *FAST,
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: momentum=-1 must be a finite number >= 0 and < 1 (0: none)"], done.stderr
    rows = pd.read_csv(results)
    assert rows.momentum.tolist() == [0.5] and rows.status.tolist() == ["ok"]  # the job after it never ran


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["imbalance=1.5"], "imbalance=1.5 is outside"),  # found when the splits are drawn, not by the schema
    (["meta.per_class=500"], "meta.per_class=500"),
    (["hardware=cuda"], "hardware=cpu"),
])
def test_input_the_run_cannot_use_is_one_line_exit_2_and_no_row(tmp_path, args, message):
    results = tmp_path / "results.csv"
    done = run_cli(*args, *FAST, f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    if args == ["hardware=cuda"] and done.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not results.exists() and not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("overrides", [["momentum=-1"], ["dataset.test_per_class=0"], ["method=l2rw", "method.meta_batch_size=0"]])
def test_a_bad_value_stops_train_before_anything_is_written(make_cfg, tmp_path, overrides):
    """Each bad value's message: test_config_schema.py; here, that train() checks before it writes."""
    with pytest.raises(UserError, match=f"^{re.escape(overrides[-1])} must be "):
        train(make_cfg(*overrides), tmp_path / "run")
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run").exists()


def test_an_unusable_results_csv_is_named_before_training(make_cfg, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "a_file").write_text("")
    for path, message in [(tmp_path / "taken", "is a directory"), (tmp_path / "a_file" / "results.csv", "cannot create its folder")]:
        with pytest.raises(UserError, match=message):
            train(make_cfg(f"results_csv={path}"), tmp_path / "run")
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_unknown_option_is_one_line_listing_the_choices(tmp_path):
    done = run_cli("method=adam", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == ("error: method=adam: adam is not an option of method; use one of "
                                                    "class_balanced, cmwnet, coteaching, l2rw, mwnet, sgd, weighted_sampler\n")


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(make_cfg, tmp_path):
    def metrics(seed, name):
        train(make_cfg("method=l2rw", f"seed={seed}"), tmp_path / name)
        return pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="seconds")

    first, second, other = metrics(0, "a"), metrics(0, "b"), metrics(1, "c")
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(other)


@pytest.mark.slow
def test_a_diverged_run_writes_a_diverged_row_one_line_and_exits_1(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "lr=1e30", "momentum=0.9", "schedule=constant", *FAST, f"results_csv={results}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: loss is ") and "lower `lr`" in lines[0], done.stderr
    row = pd.read_csv(results).iloc[0]
    assert row.status == "diverged" and 1 <= row.diverged_step <= 20
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # resuming would only diverge again


@pytest.mark.slow
def test_help_names_the_command_its_examples_and_the_option_groups(tmp_path):
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("l2rw-train: ") and "powered by Hydra" not in done.stdout
    assert "l2rw-train --multirun method=sgd,weighted_sampler,l2rw" in done.stdout
    assert "method: class_balanced, cmwnet, coteaching, l2rw, mwnet, sgd, weighted_sampler" in done.stdout
    assert "loss: ce, elr, focal, gce, ldam, logit_adjusted, sce" in done.stdout
