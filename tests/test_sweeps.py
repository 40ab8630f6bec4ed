"""Sweeps and their failure modes: parallel launchers, skipping finished configurations,
checkpoints that resume exactly, and a results CSV that stays whole under concurrent writers."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from l2rw.data import build_splits
from l2rw.instantiation import build
from l2rw.machine import threads_per_job
from l2rw.results import append_row
from l2rw.run_identity import config_hash
from l2rw.train import CONFIG_DIR, train
from tests.conftest import FAST, config_options, run_cli

# Long enough that a kill after the first checkpoint lands well before the end; checkpoints
# fall between evaluations, so the half-accumulated metrics window must be restored too.
RESUMABLE = ["method=l2rw", "steps=60", "eval_every=10", "checkpoint_every=7", "progress=false", "threads=1"]


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
def test_submitit_local_sweep_writes_one_row_per_job(tmp_path):
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
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.array_parallelism, launcher.max_num_timeout) == (1, 64, 3)


def test_threads_are_the_jobs_share_of_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(OmegaConf.create({})) == cores  # one job at a time
    assert threads_per_job(OmegaConf.create({"n_jobs": 2})) == max(1, cores // 2)
    assert threads_per_job(OmegaConf.create({"n_jobs": -1})) == 1  # joblib: as many jobs as cores
    assert threads_per_job(OmegaConf.create({"cpus_per_task": 3, "gpus_per_node": 1})) == 3


@pytest.mark.parametrize("overrides, same_run", [
    (["dataset.profile=longtail", "imbalance=0.5"], ["dataset.profile=longtail", "imbalance=0.9"]),
    (["imbalance_ratio=0.5"], ["imbalance_ratio=100"]),  # the step profile never reads it, nonsense or not
    (["dataset.profile=longtail", "dataset.majority_class=4"], ["dataset.profile=longtail"]),
    (["noise.flip_to=[1,2]"], []),  # no noise
    (["noise.kind=uniform", "noise.rate=0.2", "noise.background_class=3"], ["noise.kind=uniform", "noise.rate=0.2"]),
    (["noise.kind=background", "noise.rate=0.2", "noise.flip_to=abc"], ["noise.kind=background", "noise.rate=0.2"]),
    (["noise.rate=0"], ["noise.rate=0.0"]),  # no noise: any rate but 0 is refused, however it is written
    (["lr=1"], ["lr=1.0"]),
    (["meta.per_class=5"], ["dataset.meta_per_class=5"]),  # the dataset's value is only meta.per_class's default
    (["+dataset.tuned.l2rw.lr=0.5"], []),  # another method's tuned value: an sgd run reads only its own lr
])
def test_config_hash_ignores_what_the_run_does_not_read(make_cfg, overrides, same_run):
    assert config_hash(make_cfg(*overrides)) == config_hash(make_cfg(*same_run))


@pytest.mark.parametrize("overrides, other_run", [
    (["imbalance=0.5"], ["imbalance=0.9"]),
    (["dataset.profile=longtail", "imbalance_ratio=10"], ["dataset.profile=longtail"]),
    (["dataset.majority_class=4"], []),
    (["noise.kind=flip", "noise.rate=0.2", "noise.flip_to=[1,2,3,4,5,6,7,8,9,0]"], ["noise.kind=flip", "noise.rate=0.2"]),
    (["noise.kind=background", "noise.rate=0.2", "noise.background_class=3"], ["noise.kind=background", "noise.rate=0.2"]),
    (["noise.kind=uniform", "noise.rate=0.2"], ["noise.kind=uniform", "noise.rate=0.4"]),
    (["+dataset.tuned.sgd.lr=0.5"], []),  # this method's tuned value reaches the run as its lr
])
def test_config_hash_tells_apart_what_the_run_reads(make_cfg, overrides, other_run):
    assert config_hash(make_cfg(*overrides)) != config_hash(make_cfg(*other_run))


def test_a_longtail_run_differing_only_in_the_imbalance_it_does_not_read_is_skipped(make_cfg, tmp_path):
    first = train(make_cfg("dataset.profile=longtail", "imbalance=0.5", "skip_done=true"), tmp_path / "a")
    again = train(make_cfg("dataset.profile=longtail", "imbalance=0.9", "skip_done=true"), tmp_path / "b")
    assert again["run_dir"] == str(tmp_path / "a") and again["config_hash"] == first["config_hash"]
    assert not (tmp_path / "b").exists()
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 1 and rows.imbalance.isna().all()


@pytest.mark.parametrize("method", config_options("method"))
@pytest.mark.slow
def test_a_method_restored_from_its_state_draws_the_same_batches(make_cfg, method):
    cfg = make_cfg(f"method={method}")
    splits = build_splits(cfg)

    def started(seed: int):
        instance = build(cfg.method)
        instance.setup(splits.train, splits.meta, splits.num_classes, torch.Generator().manual_seed(seed))
        return instance

    original = started(0)
    batches = original.batches(16)
    for _ in range(7):  # mid-way through an epoch (digits' training set holds 90 images)
        next(batches)
    state = original.state_dict()
    expected = [next(batches) for _ in range(5)]
    restored = started(1)  # another seed: only the loaded state can make the batches match
    restored.load_state_dict(state)
    batches = restored.batches(16)
    assert all(torch.equal(next(batches), batch) for batch in expected)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """metrics.csv and the results row of a RESUMABLE run that nothing stopped."""
    out = tmp_path_factory.mktemp("uninterrupted")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*RESUMABLE, f"results_csv={out / 'results.csv'}"])
    threads = torch.get_num_threads()
    try:
        row = train(cfg, out / "run")
    finally:
        torch.set_num_threads(threads)
    return pd.read_csv(out / "run" / "metrics.csv"), row


def start_run(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    """A RESUMABLE run in tmp_path/run through the CLI, as `run_cli` starts one, without waiting."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [*RESUMABLE, f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.Popen(
        [sys.executable, "-m", "l2rw.train", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(run: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert run.poll() is None, f"the run ended before {what}: {run.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within 120 s"
        time.sleep(0.02)


def wait_for_checkpoint(run: subprocess.Popen, checkpoint: Path) -> None:
    wait_for(run, checkpoint.exists, "its first checkpoint")


def wait_for_an_evaluation(run: subprocess.Popen, metrics: Path) -> None:
    wait_for(run, lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 1, "its first evaluation")


def resume_matches_uninterrupted(tmp_path: Path, uninterrupted) -> None:
    """Rerunning the command of a stopped RESUMABLE run resumes it and ends with the metrics and
    row of a run that nothing stopped."""
    done = run_cli(*RESUMABLE, f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming from step" in done.stderr
    expected_metrics, expected_row = uninterrupted
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    pd.testing.assert_frame_equal(metrics.drop(columns="seconds"), expected_metrics.drop(columns="seconds"))
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert (row.config_hash, row.balanced_accuracy) == (expected_row["config_hash"], expected_row["balanced_accuracy"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # finished: nothing left to resume


@pytest.mark.slow
def test_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_metrics(tmp_path, uninterrupted):
    run = start_run(tmp_path)
    wait_for_checkpoint(run, tmp_path / "run" / "checkpoint.pt")
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert not (tmp_path / "results.csv").exists()  # a crash mid-run writes no row
    resume_matches_uninterrupted(tmp_path, uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_step_it_stopped_and_the_rerun_resumes(tmp_path, uninterrupted):
    # no checkpoint falls due: the one on disk can only be the one SIGTERM asked for
    run = start_run(tmp_path, "checkpoint_every=1000")
    wait_for_an_evaluation(run, tmp_path / "run" / "metrics.csv")
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted after step" in stderr and "Traceback" not in stderr
    step = int(stderr.split("interrupted after step ")[1].split(";")[0])
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["loop"]["step"] == step
    assert 10 <= step < 60
    assert not (tmp_path / "results.csv").exists()
    resume_matches_uninterrupted(tmp_path, uninterrupted)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_of_a_whole_step_and_writes_no_row(tmp_path):
    run = start_run(tmp_path)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    wait_for_checkpoint(run, checkpoint)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "interrupted after step" in stderr and "Traceback" not in stderr
    step = int(stderr.split("interrupted after step ")[1].split(";")[0])
    state = torch.load(checkpoint, weights_only=False)
    assert state["loop"]["step"] == step and 7 <= step < 60
    assert [row["step"] for row in state["loop"]["metrics"]] == list(range(10, step + 1, 10))
    assert not (tmp_path / "results.csv").exists()


def append_rows(results: Path, writer: int, count: int) -> None:
    # Half the writers add a column, so appends race with rewrites to the union of columns.
    extra = {"extra": f"w{writer}"} if writer % 2 else {}
    for index in range(count):
        identity = {"run_id": f"{writer}-{index}", "config_hash": f"h{writer}", "status": "ok"}
        append_row(results, identity | {"writer": writer, "index": index, "text": "a, \"quoted\"\nvalue", **extra})


@pytest.mark.slow
def test_concurrent_appends_neither_interleave_nor_lose_rows(tmp_path):
    results = tmp_path / "results.csv"
    context = multiprocessing.get_context("fork")  # no re-import of torch in each writer
    writers = [context.Process(target=append_rows, args=(results, writer, 50)) for writer in range(8)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert len(rows) == 400
    assert sorted(zip(rows.writer.astype(int), rows["index"].astype(int))) == [(w, i) for w in range(8) for i in range(50)]
    assert set(rows.text) == {"a, \"quoted\"\nvalue"}


@pytest.mark.slow
def test_forced_nan_stops_with_status_diverged_a_message_and_exit_1(tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "lr=1e30", "momentum=0.9", "schedule=constant", *FAST, f"results_csv={results}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "training diverged" in done.stderr and "lower `lr`" in done.stderr and "Traceback" not in done.stderr
    row = pd.read_csv(results).iloc[0]
    assert row.status == "diverged" and 1 <= row.diverged_step <= 20
