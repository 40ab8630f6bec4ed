"""End to end through the CLI and through train(): files, rows, errors, reproducibility."""
import json
import re

import pandas as pd
import pytest

from l2rw.errors import DivergedError, UserError
from l2rw.train import train
from tests.conftest import FAST, run_cli


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
    assert 0 <= row.balanced_accuracy <= 1 and row.seconds_per_step > 0
    assert len(str(row.per_class_recall).split()) == 10
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics.step.tolist() == [10, 20]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["balanced_accuracy"] == row.balanced_accuracy


@pytest.mark.slow
def test_multirun_writes_one_row_per_job(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "method=sgd,l2rw", "imbalance=0.5,0.9", *FAST,
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert sorted(zip(rows.method, rows.imbalance)) == [("l2rw", 0.5), ("l2rw", 0.9), ("sgd", 0.5), ("sgd", 0.9)]
    assert rows.run_dir.nunique() == 4


@pytest.mark.slow
def test_bad_input_exits_2_with_the_message_and_no_row(tmp_path):
    results = tmp_path / "results.csv"
    for args, message in [
        (["imbalance=1.5"], "imbalance=1.5 is outside"),
        (["meta.per_class=500"], "meta.per_class=500"),
        (["hardware=cuda"], "hardware=cpu"),
    ]:
        done = run_cli(*args, *FAST, f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        if args == ["hardware=cuda"] and done.returncode == 0:
            continue  # this machine has a GPU
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not results.exists()


@pytest.mark.parametrize("override, message", [
    ("imbalance=abc", "imbalance=abc must be a finite number"),
    ("lr=abc", "lr=abc must be a finite number"),
    ("noise.rate=abc", "noise.rate=abc must be a finite number"),
    ("dataset.profile=longtail imbalance_ratio=abc", "imbalance_ratio=abc must be a finite number"),
    ("seed=1.5", "seed=1.5 must be a whole number"),
    ("momentum=-1", "momentum=-1 must be a finite number >= 0 and < 1"),
    ("weight_decay=-1", "weight_decay=-1 must be a finite number >= 0"),
    ("dataset.test_per_class=0", "dataset.test_per_class=0 must be a whole number >= 1"),
    ("method.meta_batch_size=0", "method.meta_batch_size=0 must be a whole number >= 1"),
    ("method.meta_batch_size=abc", "method.meta_batch_size=abc must be a whole number >= 1"),
    ("dataset.classes=abc", "dataset.classes=abc must be a list of class indices"),
    ("dataset.classes=3", "dataset.classes=3 must be a list of class indices"),
    ("noise.kind=flip noise.flip_to=-1", "noise.flip_to=-1 must be a list of target classes"),
    ("progress=abc", "progress=abc must be true or false"),
    ("hardware.compile=1", "hardware.compile=1 must be true or false"),
    ("hardware.device=abc", "hardware.device='abc' is unknown"),
    ("meta.per_class=1.5", "meta.per_class=1.5 must be a whole number >= 1"),
    ("method.impl=[1,2]", "method.impl=[1,2] is unknown"),
    ("lr=inf", "lr=inf must be a finite number"),
    ("results_csv=[1]", "results_csv=[1] must be a path"),
])
def test_mistyped_values_are_named_before_training_or_writing(make_cfg, tmp_path, override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        train(make_cfg("method=l2rw", *override.split()), tmp_path / "run")
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run" / "metrics.csv").exists()


def test_an_unusable_results_csv_is_named_before_training(make_cfg, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "a_file").write_text("")
    for path, message in [(tmp_path / "taken", "is a directory"), (tmp_path / "a_file" / "results.csv", "cannot create its folder")]:
        with pytest.raises(UserError, match=message):
            train(make_cfg(f"results_csv={path}"), tmp_path / "run")
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_unknown_option_fails_with_hydra_listing_the_choices(tmp_path):
    done = run_cli("method=adam", cwd=tmp_path)
    assert done.returncode != 0 and "l2rw" in done.stderr and "sgd" in done.stderr


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(make_cfg, tmp_path):
    def metrics(seed, name):
        train(make_cfg("method=l2rw", f"seed={seed}"), tmp_path / name)
        return pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="seconds")

    first, second, other = metrics(0, "a"), metrics(0, "b"), metrics(1, "c")
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(other)


@pytest.mark.slow
def test_divergence_stops_with_status_and_step(make_cfg, tmp_path):
    with pytest.raises(DivergedError, match="lower `lr`"):
        train(make_cfg("lr=1e30", "momentum=0.9", "schedule=constant"), tmp_path / "run")
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row.status == "diverged" and 1 <= row.diverged_step <= 20


@pytest.mark.slow
def test_help_names_the_command_its_examples_and_the_option_groups(tmp_path):
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("l2rw-train: ") and "powered by Hydra" not in done.stdout
    assert "l2rw-train --multirun method=sgd,weighted_sampler,l2rw" in done.stdout
    assert "method: class_balanced, l2rw, mwnet, sgd, weighted_sampler" in done.stdout
    assert "loss: ce, focal, gce, ldam, logit_adjusted" in done.stdout
