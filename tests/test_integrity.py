"""What a user's mistake or a scheduler's signal must never do: write a row or a config of a run
that did not happen, overwrite what belongs to another run, or end in a traceback."""
import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from l2rw.checkpoint import Checkpoint, DeferredInterrupt
from l2rw.config_schema import check_config
from l2rw.data import LabeledImages
from l2rw.errors import Interrupted, UserError
from l2rw.methods.base import Method
from l2rw.run_identity import config_hash
from l2rw.train import CONFIG_DIR
from tests.conftest import FAST, config_options, run_cli


def cli_refuses(tmp_path, *args: str) -> str:
    """Run `l2rw-train ARGS` that must stop with exit code 2 before anything of the run is
    written; return its one-line message."""
    results = tmp_path / "results.csv"
    run_dir = tmp_path / "run"
    done = run_cli(*FAST, f"results_csv={results}", f"hydra.run.dir={run_dir}", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (run_dir / "metrics.csv").exists()
    return done.stderr


# --- the results table ---------------------------------------------------------------------

@pytest.mark.slow
def test_cli_refuses_a_results_csv_that_is_not_a_results_table_and_leaves_it_as_it_was(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_bytes(b"method,lr,accuracy\r\nsgd,0.1,0.9\r\n")
    message = cli_refuses(tmp_path, f"results_csv={notes}")
    assert f"error: results_csv={notes} is not an l2rw results table" in message
    assert notes.read_bytes() == b"method,lr,accuracy\r\nsgd,0.1,0.9\r\n"
    assert not (tmp_path / "notes.csv.malformed").exists()


# --- checkpoints ---------------------------------------------------------------------------

def run_objects(width: int = 2):
    """A model, optimizer, scheduler and method as a run holds them, at their smallest."""
    model = nn.Linear(width, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    method = Method()
    train = LabeledImages(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    method.setup(train, train, 2, torch.Generator().manual_seed(0))
    return model, optimizer, scheduler, method


def saved(run_dir, config_hash: str = "this") -> Checkpoint:
    checkpoint = Checkpoint(run_dir, 0, config_hash)
    checkpoint.save(*run_objects(), {"step": 3})
    return checkpoint


def damaged(path) -> dict[str, bytes]:
    whole = path.read_bytes()
    return {"empty": b"", "garbage": b"not a checkpoint\n" * 10, "truncated": whole[: len(whole) // 2]}


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_an_unreadable_checkpoint_is_named_with_its_fix(tmp_path, damage):
    checkpoint = saved(tmp_path)
    checkpoint.path.write_bytes(damaged(checkpoint.path)[damage])
    for use in (checkpoint.check_compatible, lambda: checkpoint.restore(*run_objects())):
        with pytest.raises(UserError, match=f"^{checkpoint.path} cannot be read as a checkpoint .*; delete it to start the run over$"):
            use()


def test_a_file_that_is_no_checkpoint_and_one_of_another_shape_are_named(tmp_path):
    checkpoint = Checkpoint(tmp_path, 0, "this")
    torch.save({"weights": torch.zeros(2)}, checkpoint.path)
    with pytest.raises(UserError, match=f"^{checkpoint.path} is not an l2rw checkpoint; delete it"):
        checkpoint.check_compatible()
    checkpoint = saved(tmp_path)
    with pytest.raises(UserError, match=f"^{checkpoint.path} does not fit this run's model or method .*; delete it"):
        checkpoint.restore(*run_objects(width=3))


def test_a_resumed_run_reads_its_checkpoint_once(tmp_path, monkeypatch):
    saved(tmp_path)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args) or real_load(*args, **kwargs))
    checkpoint = Checkpoint(tmp_path, 0, "this")
    checkpoint.check_compatible()
    assert checkpoint.restore(*run_objects())["step"] == 3
    assert len(loads) == 1
    assert checkpoint.restore(*run_objects())["step"] == 3 and len(loads) == 2  # a later restore reads the file anew


def test_a_checkpoint_of_another_configuration_is_refused_before_anything_is_written(tmp_path):
    foreign = saved(tmp_path, config_hash="other").path.read_bytes()
    with pytest.raises(UserError, match="belongs to another configuration \\(config_hash other, this one is this\\)"):
        Checkpoint(tmp_path, 0, "this").check_compatible()
    assert (tmp_path / "checkpoint.pt").read_bytes() == foreign
    Checkpoint(tmp_path / "new", 0, "this").check_compatible()  # no checkpoint: nothing to refuse


@pytest.mark.slow
def test_cli_names_a_damaged_checkpoint_instead_of_a_traceback(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    message = cli_refuses(tmp_path)
    assert f"{tmp_path / 'run' / 'checkpoint.pt'} cannot be read as a checkpoint" in message
    assert "delete it to start the run over" in message
    assert not (tmp_path / "results.csv").exists()


# --- signals -------------------------------------------------------------------------------

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


# --- the config ----------------------------------------------------------------------------

def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("override", [
    *[f"{group}={option}" for group in ("dataset", "model", "method", "loss", "hardware") for option in config_options(group)],
    *[f"+experiment={preset}" for preset in config_options("experiment")],
    *[f"+recipe={recipe}" for recipe in config_options("recipe")],
])
def test_every_option_of_every_group_passes_the_check(override):
    check_config(compose_config(override))


@pytest.mark.parametrize("overrides, message", [
    (["steps=0"], "steps=0 must be a whole number >= 1"),
    (["steps=true"], "steps=true must be a whole number >= 1"),
    (["seed=1.5"], "seed=1.5 must be a whole number in [0, 9223372036854775807]"),
    (["seed=18446744073709551616"], "seed=18446744073709551616 must be a whole number in [0, 9223372036854775807]"),
    (["lr=abc"], "lr=abc must be a finite number > 0"),
    (["lr=inf"], "lr=inf must be a finite number > 0"),
    (["momentum=1.0"], "momentum=1.0 must be a finite number >= 0 and < 1 (0: none)"),
    (["momentum=-1"], "momentum=-1 must be a finite number >= 0 and < 1 (0: none)"),
    (["weight_decay=-1"], "weight_decay=-1 must be a finite number >= 0 (0: none)"),
    (["schedule=linear"], "schedule=linear is unknown; use one of constant, cosine, step"),
    (["clip_grad_norm=0"], "clip_grad_norm=0 must be a finite number > 0, or null for no clipping"),
    (["threads=0"], "threads=0 must be a whole number in [1, 4096], or null for this job's share of the cores"),
    (["checkpoint_every=-1"], "checkpoint_every=-1 must be a whole number >= 0 (0: only when interrupted)"),
    (["progress=abc"], "progress=abc must be true or false"),
    (["results_csv=[1]"], "results_csv=[1] must be a path"),
    (["+lr_decay=0.1"], "lr_decay is not an option; check its spelling (options: seed, imbalance, imbalance_ratio, "
                        "meta, noise, steps, batch_size, lr, momentum, weight_decay, schedule, clip_grad_norm, "
                        "eval_every, posthoc_tau, progress, results_csv, skip_done, checkpoint_every, threads)"),
    (["imbalance=abc"], "imbalance=abc must be a finite number (the majority class's share of the training set)"),
    (["dataset.profile=longtail", "imbalance_ratio=0.5"],
     "imbalance_ratio=0.5 must be a finite number >= 1 (n_max / n_min; 1 is balanced)"),
    (["meta.per_class=1.5"], "meta.per_class=1.5 must be a whole number >= 1 (clean images per class)"),
    (["meta.add_to_train=1"], "meta.add_to_train=1 must be true or false"),
    (["noise.kind=flip", "noise.flip_to=abc"],
     "noise.flip_to=abc must be a list of target classes, one per class, e.g. [1,2,0], or null for c -> c+1 mod K"),
    (["noise.kind=uniform", "noise.rate=1.5"],
     "noise.rate=1.5 must be a finite number >= 0 and <= 1 (the probability that a training label is replaced)"),
    (["dataset.classes=[0,true]"], "dataset.classes=[0,true] must be a list of class indices, e.g. [0,1], or null for all"),
    (["dataset.val_per_class=-1"], "dataset.val_per_class=-1 must be a whole number >= 0 (0: no validation split)"),
    (["dataset.train_size=0"], "dataset.train_size=0 must be a whole number >= 1, or null for all the imbalance profile allows"),
    (["dataset.test_per_class=0"], "dataset.test_per_class=0 must be a whole number >= 1 (test images per class)"),
    (["dataset=ham10000", "dataset.workers=-1"], "dataset.workers=-1 must be a whole number >= 0 (0: every available core)"),
    (["model=mlp", "model.hidden=abc"],
     "model.hidden=abc must be a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]"),
    (["model=mlp", "model.hidden=[0]"],
     "model.hidden=[0] must be a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]"),
    (["model=resnet32", "model.blocks_per_stage=-1"],
     "model.blocks_per_stage=-1 must be a whole number >= 1 (6n+2 layers: 5 gives ResNet-32)"),
    (["model=resnet18", "model.pretrained=1"], "model.pretrained=1 must be true or false"),
    (["model=lenet", "+model.hidden=[8]"], "model.hidden is not an option of model=lenet; check its spelling (options: normed_head)"),
    (["method=l2rw", "method.meta_batch_size=0"], "method.meta_batch_size=0 must be a whole number >= 1"),
    (["method=l2rw", "method.update_every=abc"], "method.update_every=abc must be a whole number >= 1 (1: every step)"),
    (["method=l2rw", "method.impl=[1,2]"], "method.impl=[1,2] is unknown; use one of fwd, double_backprop, last_layer"),
    (["method=l2rw", "method.mix=1.5"], "method.mix=1.5 must be a finite number >= 0 and <= 1 (0: plain L2RW weights)"),
    (["method=l2rw", "method.smoothing=1"],
     "method.smoothing=1 must be a finite number >= 0 and < 1 (0: each step's own weights)"),
    (["method=class_balanced", "method.beta=abc"],
     "method.beta=abc must be a finite number >= 0 and < 1 (Cui et al. use 0.9-0.9999), or null for 1/n_c"),
    (["hardware.amp=fp16"], "hardware.amp=fp16 is unknown; use one of bf16, or null for full precision"),
    (["hardware.channels_last=null"], "hardware.channels_last=null must be true or false"),
    (["lr=1e39"], "lr=1e+39 is too large: it must fit a float32 (magnitude at most 3.4e38)"),
    (["weight_decay=1e308"], "weight_decay=1e+308 is too large: it must fit a float32 (magnitude at most 3.4e38)"),
    (["imbalance='0.9'"], "imbalance='0.9' must be a finite number (the majority class's share of the training set)"),
    (["method.name=weighted_sampler"], "method.name=weighted_sampler does not name what this run builds (l2rw.methods.base.Method, "
                                       "which is method=sgd); choose it with method=<name> rather than setting method.name"),
    (["dataset.name=mnist"], "dataset.name=mnist does not name what this run builds (l2rw.data.digits.load_digits, "
                             "which is dataset=digits); choose it with dataset=<name> rather than setting dataset.name"),
])
def test_a_bad_value_is_named_in_one_line_with_what_it_must_be(overrides, message):
    with pytest.raises(UserError) as raised:
        check_config(compose_config(*overrides))
    assert str(raised.value) == message


@pytest.mark.parametrize("overrides", [
    ["imbalance_ratio=0.5"],  # the step profile reads imbalance
    ["dataset.profile=longtail", "imbalance=abc"],
    ["dataset.profile=natural", "dataset.majority_class=abc"],
    ["noise.flip_to=abc"],  # no noise
    ["noise.kind=uniform", "noise.rate=0.2", "noise.background_class=[1]"],
])
def test_a_key_the_run_does_not_read_is_neither_checked_nor_hashed(overrides):
    cfg = compose_config(*overrides)
    check_config(cfg)
    without = [o for o in overrides if o.split("=")[0] in ("dataset.profile", "noise.kind", "noise.rate")]
    assert config_hash(cfg) == config_hash(compose_config(*without))


@pytest.mark.slow
def test_cli_names_a_bad_value_in_one_line_and_writes_nothing(tmp_path):
    message = cli_refuses(tmp_path, "momentum=-1")
    assert message.startswith("error: momentum=-1 must be")
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("args, message", [
    (["momentum=1.0"], "error: momentum=1.0 must be a finite number >= 0 and < 1 (0: none)"),
    (["seed=18446744073709551616"], "error: seed=18446744073709551616 must be a whole number in [0, 9223372036854775807]"),
    (["model=mlp", "model.hidden=[0]"], "error: model.hidden=[0] must be a list of hidden layer widths"),
    (["method=l2rw", "method.mix=1.5"], "error: method.mix=1.5 must be a finite number >= 0 and <= 1"),
])
@pytest.mark.slow
def test_cli_names_a_new_check_in_one_line_and_writes_nothing(tmp_path, args, message):
    assert cli_refuses(tmp_path, *args).startswith(message)
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.slow
def test_cli_refuses_a_checkpoint_of_another_configuration_before_overwriting_its_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved(run_dir, config_hash="other")
    (run_dir / "config.yaml").write_text("lr: 0.5\n")
    message = cli_refuses(tmp_path)
    assert "belongs to another configuration (config_hash other" in message
    assert (run_dir / "config.yaml").read_text() == "lr: 0.5\n"


def test_a_thread_count_too_large_for_torch_is_named(make_cfg):
    with pytest.raises(UserError, match=r"^threads=1099511627776 must be a whole number in \[1, 4096\]"):
        check_config(make_cfg("threads=1099511627776"))
