"""Files a run reads may come from anyone: loading one never runs code from it, and a crafted one
is refused with one line naming it, never a traceback."""
import pathlib
import pickle
import random
from dataclasses import asdict

import numpy as np
import pytest
import torch

from l2rw.data.cifar10 import CIFAR10, load_cifar10
from l2rw.errors import UserError
from l2rw.run.identity import config_hash
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.state import LoopState
from tests.helpers.cifar_files import dump, write_mini_cifar
from tests.helpers.command_line import l2rw_train
from tests.helpers.configs import compose_config
from tests.helpers.run_objects import EARLIER_CONFIG, run_objects, run_splits


class Payload:
    """What a hostile file holds: unpickling it creates `marker`."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- checkpoints ---------------------------------------------------------------------------

def saved(run_dir, loop: dict | None = None, steps: int | None = None) -> Checkpoint:
    checkpoint = Checkpoint(run_dir, 0, "this", steps=steps)
    checkpoint.save(*run_objects(), asdict(LoopState(step=3)) if loop is None else loop)
    return checkpoint


def rewrite(path, change) -> None:
    """Apply `change` to the saved state (our own file: loaded in full)."""
    state = torch.load(path, weights_only=False)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("write", [torch.save, lambda state, path: path.write_bytes(pickle.dumps(state, protocol=2))],
                         ids=["torch.save", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, write):
    marker = tmp_path / "ran"
    checkpoint = saved(tmp_path)
    state = torch.load(checkpoint.path, weights_only=False)
    write(state | {"model": Payload(marker)}, checkpoint.path)
    for use in (checkpoint.load, lambda: checkpoint.restore(*run_objects())):
        with pytest.raises(UserError, match=f"^{checkpoint.path} holds .*getattr.*it was not loaded") as error:
            use()
        assert one_line(error).endswith("delete it to start the run over")
    assert not marker.exists()


def test_a_saved_run_round_trips_with_its_random_states(tmp_path):
    loop = asdict(LoopState(step=3, seconds=1.5, metrics=[{"step": 2, "accuracy": 0.5}], collapse_step=2))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint = saved(tmp_path, loop, steps=20)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    checkpoint.load()
    model, optimizer, scheduler, method = run_objects()
    assert checkpoint.restore(model, optimizer, scheduler, method) == loop
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


@pytest.mark.parametrize("loop, problem", [
    ({"step": 20}, "step 20 is not below this run's steps=20"),
    ({"step": 25}, "step 25 is not below this run's steps=20"),
    ({"step": -1}, "step -1 is negative"),
    ({"step": 3, "extra": 1}, "unknown key 'extra'"),
    ({"skipped": 0}, "no loop step"),
    ([3], "no loop step"),
    ({"step": "3"}, "step is a str"),
    ({"step": 3.0}, "step is a float"),
    ({"step": True}, "step is a bool"),
    ({"step": 3, "metrics": {}}, "metrics is a dict"),
    ({"step": 3, "collapse_step": "2"}, "collapse_step is a str"),
])
def test_a_crafted_loop_state_is_refused_in_one_line(tmp_path, loop, problem):
    checkpoint = saved(tmp_path, loop, steps=20)
    with pytest.raises(UserError) as error:
        checkpoint.load()
    assert one_line(error) == f"{checkpoint.path} holds a loop state no run saves ({problem}); delete it to start the run over"


@pytest.mark.parametrize("change", [
    lambda state: state.pop("rng"),
    lambda state: state.update(extra=1),
    lambda state: state.update(config_hash=torch.zeros(2)),
], ids=["missing-key", "extra-key", "hash-not-text"])
def test_a_state_of_other_keys_is_not_a_checkpoint(tmp_path, change):
    checkpoint = saved(tmp_path)
    rewrite(checkpoint.path, change)
    with pytest.raises(UserError, match=f"^{checkpoint.path} is not an l2rw checkpoint; delete it"):
        checkpoint.load()


@pytest.mark.parametrize("change", [
    lambda state: state.update(optimizer=1),
    lambda state: state["optimizer"].update(state=None),
    lambda state: state["method"].update(generator=torch.zeros(3, dtype=torch.uint8)),
], ids=["optimizer", "optimizer-state", "method-generator"])
def test_parts_of_the_wrong_shape_are_refused_in_one_line(tmp_path, change):
    checkpoint = saved(tmp_path)
    rewrite(checkpoint.path, change)
    with pytest.raises(UserError, match=f"^{checkpoint.path} does not fit this run's model or method") as error:
        checkpoint.restore(*run_objects())
    one_line(error)


def momentum_buffers(state, shape) -> None:
    state["optimizer"]["state"] = {0: {"momentum_buffer": torch.zeros(shape)}}


@pytest.mark.parametrize("change, problem", [
    (lambda state: state["model"].update(weight=torch.zeros(2, 3)),
     "model (weight is 2x3 float32, this run's is 2x2 float32)"),
    (lambda state: state["model"].update(bias=torch.zeros(2, dtype=torch.float64)),
     "model (bias is 2 float64, this run's is 2 float32)"),
    (lambda state: state["model"].update(bias=[0.0, 0.0]), "model (bias is a list, not a tensor)"),
    (lambda state: state["model"].pop("bias"), "model (it lacks 'bias')"),
    (lambda state: state["model"].update(extra=torch.zeros(1)), "model (unknown key 'extra')"),
    (lambda state: state.update(model=[1]), "model (a list, not a state dict)"),
    (lambda state: momentum_buffers(state, (3, 3)),
     "optimizer (momentum_buffer of parameter 0 is 3x3 float32, its parameter 2x2)"),
    (lambda state: state["optimizer"]["param_groups"][0]["params"].pop(),
     "optimizer (group 0 holds 1 parameters, this run's 2)"),
    (lambda state: state["optimizer"]["param_groups"].append({"params": []}),
     "optimizer (param_groups are not its 1 group(s))"),
    (lambda state: state["optimizer"]["param_groups"][0].update(params=[[0], 1]),
     "optimizer (param_groups are not its 1 group(s))"),
    (lambda state: state["optimizer"].update(state={7: {}}), "optimizer (state of unknown parameter 7)"),
    (lambda state: state["scheduler"].update(extra=1), "scheduler (unknown key 'extra')"),
], ids=["shape", "dtype", "not-a-tensor", "missing", "extra", "not-a-dict", "momentum", "group-size", "groups",
        "parameter-not-an-index", "unknown-parameter", "scheduler"])
def test_tensors_that_do_not_fit_the_run_are_refused_before_anything_is_loaded(tmp_path, change, problem):
    checkpoint = saved(tmp_path)
    rewrite(checkpoint.path, change)
    model, optimizer, scheduler, method = run_objects()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(UserError) as error:
        checkpoint.check_fits(model, optimizer, scheduler, method, run_splits())
    assert one_line(error) == f"{checkpoint.path} does not fit this run's {problem}; delete it to start the run over"
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("change, problem", [
    (lambda state: state["rng"].update(numpy=("MT19937", [1, 2])), "numpy: IndexError"),
    (lambda state: state["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), "torch: RuntimeError"),
    (lambda state: state["rng"].update(python=(3, (1, 2), None)), "python: ValueError: state vector is the wrong size"),
    (lambda state: state["rng"].update(cuda=[1]), "cuda is not a list of byte tensors"),
    (lambda state: state["rng"].pop("cuda"), "not the python, numpy, torch and cuda states"),
], ids=["numpy", "torch", "python", "cuda", "missing"])
def test_crafted_random_states_are_refused_before_the_run_writes(tmp_path, change, problem):
    checkpoint = saved(tmp_path)
    rewrite(checkpoint.path, change)
    with pytest.raises(UserError) as error:
        checkpoint.load()
    message = one_line(error)
    assert message.startswith(f"{checkpoint.path} holds random states no run saves (") and problem in message


@pytest.mark.slow  # l2rw-train end to end; the refusals themselves are checked above, without the command line
@pytest.mark.parametrize("loop, problem", [
    ({"step": 7}, "holds a loop state no run saves (step 7 is not below this run's steps=2)"),
    ({"step": 1}, "does not fit this run's model (it lacks 'features.0.weight')"),  # a Linear's state for LeNet
], ids=["step-beyond-steps", "another-model"])
def test_the_command_line_refuses_a_crafted_checkpoint_before_it_rewrites_config_yaml(tmp_path, loop, problem):
    args = ["progress=false", "steps=2", f"results_csv={tmp_path / 'results.csv'}"]
    cfg = compose_config(*args)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(EARLIER_CONFIG)
    checkpoint = Checkpoint(run_dir, 0, config_hash(cfg))
    checkpoint.save(*run_objects(), loop)
    exit_code, stderr = l2rw_train(*args, f"hydra.run.dir={run_dir}")
    assert exit_code == 2 and stderr == f"error: {checkpoint.path} {problem}; delete it to start the run over\n"
    assert (run_dir / "config.yaml").read_text() == EARLIER_CONFIG
    assert not (tmp_path / "results.csv").exists() and not (run_dir / "metrics.csv").exists()


# --- CIFAR pickles ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["data_batch_2", "batches.meta"])
def test_a_cifar_pickle_that_would_run_code_is_refused_unread(tmp_path, name):
    root = write_mini_cifar(tmp_path / "data")
    path, marker = root / CIFAR10.folder / name, tmp_path / "ran"
    dump(path, {b"labels": [0], b"data": Payload(marker), b"label_names": [b"a"]})
    with pytest.raises(UserError, match=f"^{path} holds __builtin__.getattr, which no CIFAR-10 file holds") as error:
        load_cifar10(str(root))
    assert "dataset.download=true" in one_line(error)
    assert not marker.exists()
