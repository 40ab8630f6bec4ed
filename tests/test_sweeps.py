"""Sweeps through Hydra's launchers: each job one row, a relaunch that trains nothing, the cluster
preset. (A job that diverges or fails mid-sweep: test_cli.py; config_hash and skip_done:
test_run_identity.py; signals: test_signals.py.)"""
import pandas as pd
import pytest

from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST, compose_config


@pytest.mark.slow
def test_joblib_sweep_writes_one_row_per_job_and_a_relaunch_trains_nothing(tmp_path):
    results = tmp_path / "results.csv"
    sweep = [
        "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=sgd,weighted_sampler",
        "seed=0,1", *FAST, f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = run_cli(*sweep, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert len(rows) == 4 and rows.config_hash.nunique() == 4 and rows.run_dir.nunique() == 4
    assert sorted(zip(rows.method, rows.seed)) == [("sgd", 0), ("sgd", 1), ("weighted_sampler", 0), ("weighted_sampler", 1)]
    trained = {path: path.stat().st_mtime_ns for path in (tmp_path / "sweep").glob("*/metrics.csv")}
    assert len(trained) == 4

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped: config_hash") == 4, again.stdout
    assert len(pd.read_csv(results)) == 4
    assert {path: path.stat().st_mtime_ns for path in trained} == trained


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_every_job(tmp_path):
    submitit = pytest.importorskip("submitit")
    try:  # the launcher needs to start and watch processes of its own
        submitit.LocalExecutor(tmp_path / "probe").submit(int, "1").result()
    except Exception as error:  # noqa: BLE001  any failure here means the environment, not l2rw
        pytest.skip(f"submitit cannot start processes here: {error!r}")
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=0,1", *FAST,
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert sorted(rows.seed) == [0, 1] and set(rows.status) == {"ok"}


def test_slurm_preset_sets_the_cluster_options_over_submitit_slurm():
    cfg = compose_config("hydra/launcher=slurm", hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.array_parallelism, launcher.max_num_timeout) == (1, 64, 3)
