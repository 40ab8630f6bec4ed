"""Signals to a running job (l2rw.training.checkpoint.DeferredInterrupt and the command line): Ctrl-C,
SIGTERM and SIGUSR2 stop a run after a whole step with a checkpoint, no row and the shell's exit
code for the signal; a second signal stops it at once; a killed run resumes to the metrics of one
nothing stopped.

The command-line runs signal themselves from inside a chosen step (`signalled_run`), so where the
signal lands is part of the test, not a race between a poll and the run."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2rw.errors import Interrupted
from l2rw.run.train import train
from l2rw.training.signals import DeferredInterrupt
from tests.helpers.command_line import run_cli
from tests.helpers.configs import compose_config

ROOT = Path(__file__).resolve().parents[1]
# Checkpoints fall between evaluations, so a resumed run must restore a half-accumulated window.
# method=sgd: its steps go through base.Method.step_loss, where SIGNALLING_RUN signals from
# (resuming each method's own state: test_resume.py)
RESUMABLE = ["method=sgd", "steps=60", "eval_every=10", "checkpoint_every=7", "progress=false", "threads=1"]
SIGNALLED_STEP = 15

# `l2rw-train ARGS` whose method sends itself the named signals, one after the other, from inside
# the step_loss of step AT (the step's update has not happened yet)
SIGNALLING_RUN = """
import os, signal, sys
from l2rw.methods import base
at, names = int(sys.argv[1]), sys.argv[2].split(",")
step_loss, calls = base.Method.step_loss, []
def signalling_step_loss(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == at:
        for name in names:
            os.kill(os.getpid(), getattr(signal, name))
    return step_loss(self, *args, **kwargs)
base.Method.step_loss = signalling_step_loss
sys.argv = ["l2rw-train", *sys.argv[3:]]
from l2rw.run.train import cli
cli()
"""


def signalled_run(tmp_path: Path, *signals: str, at: int = SIGNALLED_STEP, overrides=()) -> subprocess.CompletedProcess:
    """The RESUMABLE run in tmp_path/run, through the command line, signalling itself at step `at`."""
    args = [*RESUMABLE, f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", SIGNALLING_RUN, str(at), ",".join(signals), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def saved_loop(tmp_path: Path) -> dict:
    return torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["loop"]


# --- in this process ---------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_a_schedulers_signal_is_deferred_like_ctrl_c_then_handed_to_the_handler_before(signum):
    calls = []
    ctrl_c = signal.getsignal(signal.SIGINT)
    before = signal.signal(signum, lambda number, frame: calls.append(number))  # as submitit's requeue handler
    try:
        with pytest.raises(Interrupted), DeferredInterrupt() as interrupt:
            os.kill(os.getpid(), signum)
            assert (interrupt.requested, interrupt.signum, calls) == (True, signum, [])  # the step goes on
            raise Interrupted(3, Path("checkpoint.pt"))  # as the loop does once the checkpoint is saved
        assert calls == [signum]
        with DeferredInterrupt():
            os.kill(os.getpid(), signum)
        assert calls == [signum]  # a run that finished all its steps anyway is not handed over
        assert signal.getsignal(signal.SIGINT) is ctrl_c
    finally:
        signal.signal(signum, before)


def test_a_second_ctrl_c_stops_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt), DeferredInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested and interrupt.signum == signal.SIGINT  # deferred: the step goes on
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("after the second")
    assert reached == []


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGUSR2, signal.SIGINT)])
def test_a_second_signal_goes_to_the_handler_from_before_at_once(first, second):
    calls = []
    before = {s: signal.signal(s, lambda number, frame: calls.append(number)) for s in {first, second}}
    try:
        with DeferredInterrupt() as interrupt:
            os.kill(os.getpid(), first)
            assert interrupt.requested and calls == []
            os.kill(os.getpid(), second)
            assert calls == [second]  # handled now, not after the step
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


# --- through the command line ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGUSR2"])
def test_a_signal_saves_the_step_it_came_in_and_exits_with_the_shells_code(tmp_path, name):
    done = signalled_run(tmp_path, name)
    signum = getattr(signal, name)
    assert done.returncode == 128 + signum, done.stderr  # 130, 143, 140
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: interrupted after step {SIGNALLED_STEP}; saved "), done.stderr
    loop = saved_loop(tmp_path)
    assert loop["step"] == SIGNALLED_STEP  # the whole step, and no step after it
    assert [row["step"] for row in loop["metrics"]] == list(range(10, SIGNALLED_STEP + 1, 10))
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, returncode", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_second_signal_stops_the_run_at_once_without_a_checkpoint(tmp_path, name, returncode):
    """The second signal stops the run as the handler from before would (Ctrl-C's KeyboardInterrupt;
    SIGTERM's default, which would end the process without a word, as StoppedAtOnce), with the
    shell's code. No checkpoint falls due, so none is saved."""
    done = signalled_run(tmp_path, name, name, overrides=["checkpoint_every=1000"])
    assert done.returncode == returncode, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "results.csv").exists()
    # the evaluation after the signalled step never came
    assert pd.read_csv(tmp_path / "run" / "metrics.csv").step.tolist() == list(range(10, SIGNALLED_STEP, 10))


@pytest.mark.slow
def test_a_second_ctrl_c_during_training_says_what_stays(tmp_path):
    done = signalled_run(tmp_path, "SIGINT", "SIGINT", overrides=["checkpoint_every=1000"])
    assert (tmp_path / "run" / "config.yaml").exists()
    assert done.stderr.splitlines()[-1] == (f"interrupted at once; what the run wrote so far stays in {tmp_path / 'run'}, "
                                            "and a checkpoint.pt saved earlier resumes it with the same command")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """metrics.csv and the results row of a RESUMABLE run that nothing stopped."""
    out = tmp_path_factory.mktemp("uninterrupted")
    cfg = compose_config(*RESUMABLE, f"results_csv={out / 'results.csv'}")
    threads = torch.get_num_threads()
    try:
        row = train(cfg, out / "run")
    finally:
        torch.set_num_threads(threads)
    return pd.read_csv(out / "run" / "metrics.csv"), row


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGKILL", "SIGTERM"])
def test_a_killed_or_terminated_run_resumes_to_the_uninterrupted_metrics(tmp_path, uninterrupted, name):
    """SIGKILL at step 15 leaves the checkpoint of step 14 (checkpoint_every=7); SIGTERM saves step 15."""
    done = signalled_run(tmp_path, name)
    assert done.returncode == (-signal.SIGKILL if name == "SIGKILL" else 128 + signal.SIGTERM), done.stderr
    assert saved_loop(tmp_path)["step"] == (14 if name == "SIGKILL" else SIGNALLED_STEP)
    assert not (tmp_path / "results.csv").exists()  # a run stopped mid-way writes no row
    args = [*RESUMABLE, f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}"]
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {14 if name == 'SIGKILL' else SIGNALLED_STEP}" in resumed.stderr
    expected_metrics, expected_row = uninterrupted
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    pd.testing.assert_frame_equal(metrics.drop(columns="seconds"), expected_metrics.drop(columns="seconds"))
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert (row.config_hash, row.balanced_accuracy) == (expected_row["config_hash"], expected_row["balanced_accuracy"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # finished: nothing left to resume
