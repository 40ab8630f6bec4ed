"""A run dir's checkpoint.pt that this run could not resume, crafted or not a file at all, is refused
in one line with exit code 2 before the run writes anything: no file of the run dir changes,
config.yaml included. One row per crafted part, each resumed with the arguments that saved it."""
import os
import shutil
import signal
import threading

import pytest
import torch
from torch import nn

from l2rw.data import LabeledImages, Splits
from l2rw.errors import UserError
from l2rw.methods.class_balanced import ClassBalanced
from l2rw.methods.l2rw import L2RW
from l2rw.training import loop as loop_module
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.optimization import make_scheduler
from tests.helpers.command_line import l2rw_train

# MW-Net under label noise trains its weight net with Adam: a method state with an optimizer of its
# own. Evaluations every 2 steps with a validation split fill the loop's metrics and best.
CHECKPOINT_ARGS = [
    "progress=false", "method=mwnet", "steps=8", "eval_every=2", "checkpoint_every=0", "momentum=0.9",
    "dataset.val_per_class=3", "noise.kind=uniform", "noise.rate=0.3",
]
CHECKPOINT_STEP = 5  # between evaluations: the loop's window is half full
START_OVER = "; delete it to start the run over"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run dir as a run Ctrl-C stopped after step CHECKPOINT_STEP leaves it, its checkpoint among
    the files it wrote: made once for the module, each test resumes a copy."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    real_take_step = loop_module.take_step

    def take_step(*args):
        if args[-1] == CHECKPOINT_STEP:  # the step number
            os.kill(os.getpid(), signal.SIGINT)
        return real_take_step(*args)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(loop_module, "take_step", take_step)
        exit_code, stderr = l2rw_train(*CHECKPOINT_ARGS, f"results_csv={run_dir.parent / 'results.csv'}", f"hydra.run.dir={run_dir}")
    assert exit_code == 130 and (run_dir / "checkpoint.pt").is_file(), stderr
    return run_dir


def holder(state: dict, path: tuple):
    """The container of the part at `path` (keys from the top of the saved state)."""
    for key in path[:-1]:
        state = state[key]
    return state


def set_in(path: tuple, value):
    """A change to the saved state: the part at `path` set to `value`."""
    return lambda state: holder(state, path).__setitem__(path[-1], value)


def removed(path: tuple):
    return lambda state: holder(state, path).pop(path[-1])


CHECKPOINT_GROUP = ("optimizer", "param_groups", 0)
CHECKPOINT_LOOP = ("loop",)
CHECKPOINT_WEIGHT_NET = ("method", "weight_net")
CHECKPOINT_CASES = [
    # the schedule: the optimizer's lr and settings, the scheduler's state, at the saved step
    ("lr", set_in((*CHECKPOINT_GROUP, "lr"), 1e-12), "optimizer (group 0 has lr=1e-12, this run's 0.0308658"),
    ("initial-lr", set_in((*CHECKPOINT_GROUP, "initial_lr"), 0.5), "optimizer (group 0 has initial_lr=0.5, this run's 0.1)"),
    ("momentum", set_in((*CHECKPOINT_GROUP, "momentum"), 0.0), "optimizer (group 0 has momentum=0.0, this run's 0.9)"),
    ("weight-decay", set_in((*CHECKPOINT_GROUP, "weight_decay"), 0.5), "optimizer (group 0 has weight_decay=0.5, this run's"),
    ("setting-missing", removed((*CHECKPOINT_GROUP, "nesterov")), "optimizer (group 0 lacks the setting 'nesterov')"),
    ("setting-unknown", set_in((*CHECKPOINT_GROUP, "lr_scale"), 2.0), "optimizer (group 0 has an unknown setting 'lr_scale')"),
    ("parameters-renumbered", set_in((*CHECKPOINT_GROUP, "params"), [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]),
     "optimizer (group 0 numbers its parameters [1, 0,"),
    ("base-lrs", set_in(("scheduler", "base_lrs"), [1e-12]),
     f"scheduler (base_lrs is [1e-12]; this run's schedule has [0.1] at step {CHECKPOINT_STEP})"),
    ("last-epoch", set_in(("scheduler", "last_epoch"), 0),
     f"scheduler (last_epoch is 0; this run's schedule has {CHECKPOINT_STEP} at step {CHECKPOINT_STEP})"),
    ("lr-lambdas", set_in(("scheduler", "lr_lambdas"), [{"steps": 1}]), "scheduler (lr_lambdas is [{'steps': 1}]"),
    # the loop's state, against this run's data
    ("trained-prior-length", set_in((*CHECKPOINT_LOOP, "trained_prior"), [0.5, 0.5]),
     "loop state (trained_prior is not 10 class masses >= 0, one per class)"),
    ("trained-prior-nan", set_in((*CHECKPOINT_LOOP, "trained_prior"), [float("nan")] * 10), "loop state (trained_prior is not 10"),
    ("metrics-row-bogus", set_in((*CHECKPOINT_LOOP, "metrics", 0), {"step": 2, "bogus": 1}),
     "loop state (metrics row 0 does not hold metrics.csv's columns)"),
    ("metrics-row-text", set_in((*CHECKPOINT_LOOP, "metrics", 1, "accuracy"), "high"),
     "loop state (metrics row 1 has accuracy='high', not a number)"),
    ("metrics-row-step", set_in((*CHECKPOINT_LOOP, "metrics", 1, "step"), 9),
     f"loop state (metrics row 1 is of step 9, not one after 2 up to {CHECKPOINT_STEP})"),
    ("weight-stats-unknown-key", set_in((*CHECKPOINT_LOOP, "weight_stats", "extra"), torch.zeros(12, dtype=torch.float64)),
     "loop state (weight_stats: not the sums, counts, example_sums, example_steps, example_zeros sums)"),
    ("weight-stats-shape", set_in((*CHECKPOINT_LOOP, "weight_stats", "sums"), torch.zeros(3, dtype=torch.float64)),
     "loop state (weight_stats: sums is not 12 float64 sums)"),
    ("best-missing-field", removed((*CHECKPOINT_LOOP, "best", "confusion")),
     "loop state (best does not hold step, val_balanced_accuracy, accuracy, balanced_accuracy, confusion)"),
    ("best-confusion", set_in((*CHECKPOINT_LOOP, "best", "confusion"), [[1, 2], [3, 4]]),
     "loop state (best confusion is not 10x10 counts)"),
    ("best-score-zero-denominator", set_in((*CHECKPOINT_LOOP, "best_val_exact"), [1, 0]),
     "loop state (best_val_exact is not a [numerator, denominator > 0] pair)"),
    ("window-negative", set_in((*CHECKPOINT_LOOP, "window_steps"), -1),
     f"holds a loop state no run saves (window_steps -1 is not a count of steps up to {CHECKPOINT_STEP})"),
    # the method's state, against the method set up for this run
    ("method-unknown-key", set_in(("method", "extra"), 1),
     "method (its state does not hold generator, epoch_rest, weight_net, optimizer)"),
    ("weight-net-shape", set_in((*CHECKPOINT_WEIGHT_NET, "layers.0.weight"), torch.zeros(50, 1)),
     "method (its weight net is not Linear(1, 100), ReLU, Linear(100, 1), sigmoid)"),
    ("weight-net-adam-shape", set_in(("method", "optimizer", "state", 0, "exp_avg"), torch.zeros(50, 1)),
     "method (its weight net's optimizer does not fit: exp_avg of parameter 0 is 50x1 float32, its parameter 100x1)"),
    ("weight-net-adam-buffers", removed(("method", "optimizer", "state", 1, "exp_avg_sq")),
     "method (its weight net's optimizer does not fit: buffers ['exp_avg', 'step'] of parameter 1 are not its"),
    ("weight-net-meta-lr", set_in(("method", "optimizer", "param_groups", 0, "lr"), 0.5),
     "method (its weight net's optimizer does not fit: group 0 has lr=0.5, this run's 0.001)"),
]


def files_of(run_dir) -> dict[str, bytes]:
    """The run's regular files in `run_dir` and what they hold (a pipe is never opened). Hydra's
    record of the command line, .hydra/, is Hydra's own: it writes it as any job starts."""
    return {path.name: path.read_bytes() for path in sorted(run_dir.iterdir()) if path.is_file()}


def refused_resume(saved_run, tmp_path, prepare) -> str:
    """Resume a copy of `saved_run` once `prepare(run_dir)` altered it, with the arguments that saved
    it; assert it is refused in one line, exit code 2, with every file of the run dir as it was.
    Returns the line."""
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    with open(run_dir / "config.yaml", "a") as config:  # edited since: a rewrite would show
        config.write("# kept\n")
    prepare(run_dir)
    before = files_of(run_dir)
    results = tmp_path / "results.csv"
    exit_code, stderr = l2rw_train(*CHECKPOINT_ARGS, f"results_csv={results}", f"hydra.run.dir={run_dir}")
    lines = stderr.strip().splitlines()
    assert exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert files_of(run_dir) == before
    assert not results.exists()
    return lines[0]


@pytest.mark.slow  # each row resumes l2rw-train from a checkpoint an MW-Net run saved
@pytest.mark.parametrize("change, fragment", [case[1:] for case in CHECKPOINT_CASES], ids=[case[0] for case in CHECKPOINT_CASES])
def test_a_crafted_checkpoint_is_refused_in_one_line_before_the_run_writes(saved_run, tmp_path, change, fragment):
    def craft(run_dir):
        path = run_dir / "checkpoint.pt"
        state = torch.load(path, weights_only=False)  # our own file: loaded in full
        change(state)
        torch.save(state, path)

    line = refused_resume(saved_run, tmp_path, craft)
    assert line.startswith(f"error: {tmp_path / 'run' / 'checkpoint.pt'} ") and fragment in line, line
    assert line.endswith(START_OVER)


def test_the_checkpoint_as_saved_resumes(saved_run, tmp_path):
    """The rows above alter one part each of a checkpoint that itself resumes."""
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    exit_code, stderr = l2rw_train(*CHECKPOINT_ARGS, f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={run_dir}")
    assert exit_code == 0 and f"resuming from step {CHECKPOINT_STEP}" in stderr, stderr


def not_a_file(make):
    """The run dir's checkpoint.pt replaced by what `make(path)` makes there."""
    def prepare(run_dir):
        path = run_dir / "checkpoint.pt"
        path.unlink()
        make(path)
    return prepare


def fifo_left_open_at_most_seconds(path, seconds: float = 20) -> None:
    """A named pipe at `path` that a reader blocked on it is freed from after `seconds` (its writer
    opens and closes it), so a run that opens it fails its test instead of hanging it."""
    os.mkfifo(path)

    def free_a_reader():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader: nothing waits on the pipe
            pass

    timer = threading.Timer(seconds, free_a_reader)
    timer.daemon = True
    timer.start()


CHECKPOINT_FILE_CASES = [
    ("pipe", fifo_left_open_at_most_seconds),
    ("folder", lambda path: path.mkdir()),
    ("device", lambda path: path.symlink_to("/dev/zero")),
]


@pytest.mark.parametrize("make", [case[1] for case in CHECKPOINT_FILE_CASES], ids=[case[0] for case in CHECKPOINT_FILE_CASES])
def test_a_checkpoint_that_is_no_regular_file_is_refused_unopened(saved_run, tmp_path, make):
    line = refused_resume(saved_run, tmp_path, not_a_file(make))
    assert line == f"error: {tmp_path / 'run' / 'checkpoint.pt'} is not a regular file (a directory, device or pipe){START_OVER}"


# The state of the methods that count their steps, checked against the method set up for the run's
# data before the run writes (L2RW's weight memory holds one weight per training image).
METHOD_STATE_CASES = [
    (L2RW, "steps_taken", -1, "its steps_taken -1 is not a count of steps"),
    (L2RW, "steps_taken", 2.5, "its steps_taken 2.5 is not a count of steps"),
    (ClassBalanced, "steps_taken", "3", "its steps_taken '3' is not a count of steps"),
    (L2RW, "memory", torch.ones(7), "its smoothed weights are not 4 numbers, one per training image"),
    (L2RW, "generator", torch.zeros(3, dtype=torch.uint8), "its generator state is not a torch generator's"),
    (ClassBalanced, "extra", 1, "its state does not hold generator, epoch_rest, steps_taken"),
]


def four_image_splits() -> Splits:
    images = LabeledImages(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    return Splits(images, images, images, ["a", "b"], torch.zeros(4, dtype=torch.bool))


def method_run_objects(method_class):
    """A model, optimizer, scheduler and method set up for four_image_splits, at their smallest."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    method = method_class(meta_batch_size=2) if method_class is L2RW else method_class()
    splits = four_image_splits()
    method.setup(splits.train, splits.meta, splits.num_classes, torch.Generator())
    return model, optimizer, make_scheduler(optimizer, "constant", 10), method


def saved_with_method_state(run_dir, method_class, change: dict) -> Checkpoint:
    """A checkpoint of step 0 whose method state, that of `method_class` set up for four_image_splits,
    has the entries `change` set."""
    model, optimizer, scheduler, method = method_run_objects(method_class)
    state = method.state_dict() | change
    method.state_dict = lambda: state
    checkpoint = Checkpoint(run_dir, 0, "this", steps=10)
    checkpoint.save(model, optimizer, scheduler, method, {"step": 0})
    return checkpoint


@pytest.mark.parametrize("method_class, key, value, problem", METHOD_STATE_CASES,
                         ids=[f"{case[0].__name__}-{case[1]}" for case in METHOD_STATE_CASES])
def test_a_method_state_that_does_not_fit_is_refused_before_the_run_writes(tmp_path, method_class, key, value, problem):
    saved_with_method_state(tmp_path, method_class, {})
    Checkpoint(tmp_path, 0, "this", steps=10).check_fits(*method_run_objects(method_class), four_image_splits())  # as saved, it fits
    checkpoint = saved_with_method_state(tmp_path, method_class, {key: value})
    with pytest.raises(UserError) as error:
        Checkpoint(tmp_path, 0, "this", steps=10).check_fits(*method_run_objects(method_class), four_image_splits())
    assert str(error.value) == f"{checkpoint.path} does not fit this run's method ({problem}); delete it to start the run over"
