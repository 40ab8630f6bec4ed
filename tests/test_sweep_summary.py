"""The end-of-sweep table: the rows this sweep wrote, whatever the launcher."""
from datetime import UTC, datetime

import pandas as pd
import pytest

from l2rw.results.sweep_summary import summary_text, sweep_rows
from tests.helpers.command_line import run_cli

STARTED = datetime(2030, 1, 1, 12, 0, 0, 700000, tzinfo=UTC)
TABLE_HEADER = "| method | accuracy | balanced accuracy | s/step | seeds | collapsed |"


def results(tmp_path, *rows) -> pd.DataFrame:
    """A results table of (method, run dir under tmp_path, time) rows, seed 0, status ok."""
    return pd.DataFrame(
        [{"run_id": f"r{i}", "config_hash": f"{i:016x}", "time": time, "method": method, "seed": "0", "run_dir": str(tmp_path / run_dir),
          "status": "ok", "accuracy": 0.5, "balanced_accuracy": 0.4} for i, (method, run_dir, time) in enumerate(rows)]
    )


def test_rows_of_this_sweep_are_under_its_dir_and_not_older_than_its_start(tmp_path):
    table = results(
        tmp_path,
        ("sgd", "sweep/job_a", "2030-01-01T12:00:00+00:00"),    # the sweep's first second: its own
        ("l2rw", "sweep/job_b", "2030-01-01T12:05:00+00:00"),
        ("sgd", "sweep/job_a", "2029-12-31T09:00:00+00:00"),    # an earlier sweep into the same dir
        ("sgd", "other/job_a", "2030-01-01T12:05:00+00:00"),    # another sweep running meanwhile
        ("sgd", "sweep_2/job_a", "2030-01-01T12:05:00+00:00"),  # a sibling dir whose name starts alike
    )
    assert sweep_rows(table, tmp_path / "sweep", STARTED).run_id.tolist() == ["r0", "r1"]


def test_a_sweep_that_wrote_no_row_says_so(tmp_path):
    path = tmp_path / "results.csv"
    results(tmp_path, ("sgd", "sweep/job_a", "2029-12-31T09:00:00+00:00")).to_csv(path, index=False)
    text = summary_text(path, tmp_path / "sweep", STARTED)
    assert text.startswith(f"sweep summary: this sweep wrote no row to {path}") and "skip_done" in text
    assert summary_text(tmp_path / "absent.csv", tmp_path / "sweep", STARTED) == (
        f"sweep summary: no row was written to {tmp_path / 'absent.csv'}")


def test_a_damaged_results_file_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("time,run_dir\n2030-01-01T12:00:00+00:00,x\n")
    assert summary_text(path, tmp_path / "sweep", STARTED).startswith(f"sweep summary: {path} lacks the column(s) method")


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"])
@pytest.mark.slow
def test_a_multirun_ends_with_the_table_of_its_own_rows(tmp_path, launcher):
    csv, sweep = tmp_path / "results.csv", tmp_path / "sweep"
    # a row an earlier sweep wrote into the same file and sweep dir: not this sweep's
    results(tmp_path, ("weighted_sampler", "sweep/old_job", "2020-01-01T00:00:00+00:00")).to_csv(csv, index=False)
    done = run_cli(
        "--multirun", *launcher, "method=sgd", "seed=0,1", "steps=5", "eval_every=5", "progress=false",
        f"results_csv={csv}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = done.stdout[done.stdout.index("sweep summary:"):].splitlines()
    assert summary[0] == f"sweep summary: 2 row(s) this sweep wrote to {csv}"
    assert summary[1] == TABLE_HEADER
    (row,) = summary[3:]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "sgd" and cells[-1] == "2" and "±" in cells[2]  # mean ± std over the two seeds
