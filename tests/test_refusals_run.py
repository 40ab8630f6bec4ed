"""Refusals a command-line row of test_refusals.py cannot express: a disk that fills up midway, the
diverged message, a second SIGTERM, and the library call's arguments (an exception naming the
argument)."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from l2rw import example_weights
from l2rw.errors import DivergedError
from l2rw.reweight import IMPLEMENTATIONS
from l2rw.run import output_dirs

RUN_ROOT = Path(__file__).resolve().parents[1]


def test_a_run_dir_the_file_system_refuses_midway_leaves_no_folder_of_the_check_behind(tmp_path, monkeypatch):
    """A disk that fills up once the check has made the dir's parents: the parents go again."""
    make_dir = Path.mkdir

    def full_at_the_last(path, *args, **kwargs):
        if path.name == "run":
            make_dir(path.parent, parents=True, exist_ok=True)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        make_dir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full_at_the_last)
    assert output_dirs.creatable(tmp_path / "outputs" / "runs" / "run") == os.strerror(errno.ENOSPC)
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_run_names_every_kind_of_option_that_can_make_it_diverge():
    message = str(DivergedError(1, float("nan"), 0.1))
    assert message.startswith("training diverged: loss is nan at step 1, where the scheduled learning rate was 0.1; ")
    assert all(f"`{option}`" in message for option in ("lr", "momentum", "weight_decay", "loss.*", "method.*")), message


# `l2rw-train ARGS` that sends itself SIGTERM where no step can end first: twice in its first step
# (the second while the first still waits for the step to end), or once while its data loads. In a
# process of its own: a silent kill must not take pytest along.
RUN_SIGTERM_AT_ONCE = """
import os, signal, sys
from l2rw.methods import base
from l2rw.run import train
step_loss, build_splits = base.Method.step_loss, train.build_splits
def terminated_twice(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    return step_loss(self, *args, **kwargs)
def terminated_while_loading(cfg):
    os.kill(os.getpid(), signal.SIGTERM)
    return build_splits(cfg)
if sys.argv.pop(1) == "step":
    base.Method.step_loss = terminated_twice
else:
    train.build_splits = terminated_while_loading
sys.argv = ["l2rw-train", *sys.argv[1:]]
train.cli()
"""


@pytest.mark.slow  # l2rw-train in a process of its own
@pytest.mark.parametrize("when", ["step", "loading"], ids=["twice in a step", "once while the data loads"])
def test_sigterm_where_no_step_can_end_first_stops_the_run_at_once_in_one_line_with_the_shells_code(tmp_path, when):
    run_dir = tmp_path / "run"
    args = ["progress=false", "steps=2", "checkpoint_every=1000", "threads=1", f"results_csv={tmp_path / 'results.csv'}",
            f"hydra.run.dir={run_dir}"]
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(RUN_ROOT)}
    done = subprocess.run([sys.executable, "-c", RUN_SIGTERM_AT_ONCE, when, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip().splitlines() == [f"interrupted at once; what the run wrote so far stays in {run_dir}, "
                                                "and a checkpoint.pt saved earlier resumes it with the same command"]
    assert not (tmp_path / "results.csv").exists()


# `example_weights` given targets or inputs the default cross-entropy or any model cannot take: the
# error names the argument. (case, exception, message)
RUN_LIBRARY_CASES = [
    ("targets out of range", ValueError, r"^targets holds class 5, but the model has 2 outputs: class indices must be in \[0, 1\]$"),
    ("negative targets", ValueError, r"^targets holds class -1, but the model has 2 outputs"),
    ("meta targets out of range", ValueError, r"^meta_targets holds class 2, but the model has 2 outputs"),
    ("float targets", ValueError, r"^targets must be class indices \(a 1-D torch.long tensor\) or class probabilities .* "
                                  r"got a 1-D torch.float32 tensor"),
    ("2-D integer targets", ValueError, r"^targets must be class indices .* got a 2-D torch.int64 tensor"),
    ("probabilities of 3 classes", ValueError, r"^targets holds 3 class probabilities per example, but the model has 2 outputs$"),
    ("uint8 inputs", TypeError, r"^inputs must be a floating-point tensor, got torch.uint8; convert it, e.g. inputs.float\(\) / 255"),
    ("uint8 meta inputs", TypeError, r"^meta_inputs must be a floating-point tensor, got torch.uint8"),
    ("0-d inputs", ValueError, r"^inputs must hold one entry per example along its first dimension, got a 0-d tensor$"),
]


def library_arguments(case: str) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    x, y, meta_x, meta_y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]), torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    if case == "targets out of range":
        y = torch.tensor([0, 1, 5, 0, 1, 0])
    elif case == "negative targets":
        y = torch.tensor([0, 1, -1, 0, 1, 0])
    elif case == "meta targets out of range":
        meta_y = torch.tensor([0, 1, 2, 0])
    elif case == "float targets":
        y = y.float()
    elif case == "2-D integer targets":
        y = nn.functional.one_hot(y, 2)
    elif case == "probabilities of 3 classes":
        y = nn.functional.one_hot(y, 3).float()
    elif case == "uint8 inputs":
        x = (x.abs() * 50).to(torch.uint8)
    elif case == "uint8 meta inputs":
        meta_x = (meta_x.abs() * 50).to(torch.uint8)
    elif case == "0-d inputs":
        x = torch.tensor(1.0)
    return x, y, meta_x, meta_y


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case, exception, message", RUN_LIBRARY_CASES, ids=[case[0] for case in RUN_LIBRARY_CASES])
def test_example_weights_names_the_argument_its_loss_or_model_cannot_take(impl, case, exception, message):
    model = nn.Sequential(nn.Linear(3, 2))  # a Sequential ending in its head: every impl takes it
    with pytest.raises(exception, match=message):
        example_weights(model, *library_arguments(case), impl=impl)


def test_example_weights_takes_class_probabilities_and_leaves_other_targets_to_a_loss_fn_of_ones_own():
    model = nn.Sequential(nn.Linear(3, 2))
    x, y, meta_x, meta_y = library_arguments("")
    probabilities = nn.functional.one_hot(y, 2).float()
    weights, _ = example_weights(model, x, probabilities, meta_x, meta_y)
    assert torch.isclose(weights.sum(), torch.tensor(1.0)) or weights.sum() == 0
    squared = lambda outputs, targets: ((outputs[:, 0] - targets) ** 2)  # noqa: E731  a regression on float targets
    assert example_weights(model, x, y.float(), meta_x, meta_y.float(), loss_fn=squared).weights.shape == (6,)
