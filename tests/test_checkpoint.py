"""l2rw.training.checkpoint: a checkpoint is read once, refused with its fix when it cannot be resumed
(unreadable, not a checkpoint, of another shape or configuration), and refused before the run
writes anything. (Resuming from one: test_resume.py; what a crafted file may not do: test_trust.py.)"""
import pytest
import torch

from l2rw.data import LabeledImages
from l2rw.errors import UserError
from l2rw.training.checkpoint import Checkpoint
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST
from tests.helpers.run_objects import EARLIER_CONFIG, run_objects


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
    for use in (checkpoint.load, lambda: checkpoint.restore(*run_objects())):
        with pytest.raises(UserError, match=f"^{checkpoint.path} cannot be read as a checkpoint .*; delete it to start the run over$"):
            use()


def test_a_file_that_is_no_checkpoint_and_one_of_another_shape_are_named(tmp_path):
    checkpoint = Checkpoint(tmp_path, 0, "this")
    torch.save({"weights": torch.zeros(2)}, checkpoint.path)
    with pytest.raises(UserError, match=f"^{checkpoint.path} is not an l2rw checkpoint; delete it"):
        checkpoint.load()
    checkpoint = saved(tmp_path)
    with pytest.raises(UserError, match=f"^{checkpoint.path} does not fit this run's model or method .*; delete it"):
        checkpoint.restore(*run_objects(width=3))


@pytest.mark.parametrize("where, value", [
    ("epoch_rest", torch.tensor([0, 9])),           # an index past the 4 training images
    ("epoch_rest", torch.tensor([0.5])),            # not indices
    ("memory", torch.ones(7)),                      # L2RW's smoothed weights for 7 images, not 4
])
def test_a_method_state_of_another_training_set_is_named(tmp_path, where, value):
    from l2rw.methods.l2rw import L2RW

    def objects():
        model, optimizer, scheduler, _ = run_objects()
        method = L2RW(meta_batch_size=2, smoothing=0.5)
        train = LabeledImages(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
        method.setup(train, train, 2, torch.Generator().manual_seed(0))
        return model, optimizer, scheduler, method

    checkpoint = Checkpoint(tmp_path, 0, "this")
    checkpoint.save(*objects(), {"step": 3})
    assert checkpoint.restore(*objects())["step"] == 3  # the method's own state fits
    model, optimizer, scheduler, method = objects()
    state = method.state_dict()
    method.state_dict = lambda: state | {where: value}
    checkpoint.save(model, optimizer, scheduler, method, {"step": 3})
    with pytest.raises(UserError, match=f"^{checkpoint.path} does not fit this run's model or method \\(its .*\\); delete it"):
        checkpoint.restore(*objects())


def test_a_resumed_run_reads_its_checkpoint_once(tmp_path, monkeypatch):
    saved(tmp_path)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args) or real_load(*args, **kwargs))
    checkpoint = Checkpoint(tmp_path, 0, "this")
    checkpoint.load()
    assert checkpoint.restore(*run_objects())["step"] == 3
    assert len(loads) == 1
    assert checkpoint.restore(*run_objects())["step"] == 3 and len(loads) == 2  # a later restore reads the file anew


def test_a_checkpoint_of_another_configuration_is_refused_before_anything_is_written(tmp_path):
    foreign = saved(tmp_path, config_hash="other").path.read_bytes()
    with pytest.raises(UserError, match="belongs to another configuration \\(config_hash other, this one is this\\)"):
        Checkpoint(tmp_path, 0, "this").load()
    assert (tmp_path / "checkpoint.pt").read_bytes() == foreign
    Checkpoint(tmp_path / "new", 0, "this").load()  # no checkpoint: nothing to refuse


# --- through the command line ------------------------------------------------------------

# An earlier run's config.yaml, as far as the run dir check goes (l2rw.run.spec): the dir is a run's to resume
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


@pytest.mark.slow
def test_cli_names_a_damaged_checkpoint_instead_of_a_traceback(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(EARLIER_CONFIG)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    message = cli_refuses(tmp_path)
    assert f"{tmp_path / 'run' / 'checkpoint.pt'} cannot be read as a checkpoint" in message
    assert "delete it to start the run over" in message
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.slow
def test_cli_refuses_a_checkpoint_of_another_configuration_before_overwriting_its_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved(run_dir, config_hash="other")
    (run_dir / "config.yaml").write_text(EARLIER_CONFIG)
    message = cli_refuses(tmp_path)
    assert "belongs to another configuration (config_hash other" in message
    assert (run_dir / "config.yaml").read_text() == EARLIER_CONFIG
