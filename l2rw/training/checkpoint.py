"""Checkpoints: everything a run needs to go on exactly where it stopped, written atomically.

A run dir holding `checkpoint.pt` resumes from it; the run then ends with the same metrics as
an uninterrupted run (CPU). The file is removed once the run's results row is written.
"""
from __future__ import annotations

import copy
import math
import pickle
import random
import re
import sys
import types
import typing
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from l2rw.data import Splits
from l2rw.errors import UserError
from l2rw.file_io import atomic_path
from l2rw.methods.base import Method
from l2rw.training.network import network_problem
from l2rw.training.state import LoopState, loop_data_problem

FILENAME = "checkpoint.pt"
STATE_KEYS = {"config_hash", "model", "optimizer", "scheduler", "method", "loop", "rng"}
START_OVER = "delete it to start the run over"
_UNREAD = object()
# Beyond the tensors and containers torch.load(weights_only=True) admits, a checkpoint holds
# np.random.get_state()'s uint32 array: numpy's _reconstruct (named as the installed numpy
# pickles it), ndarray, dtype and the uint32 dtype's class (numpy.dtypes.UInt32DType). Anything
# else is refused unread: unpickling it could run code.
NUMPY_STATE_GLOBALS = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class Checkpoint:
    """`run_dir/checkpoint.pt`, saved every `every` steps (0: only when interrupted), tagged with
    the config hash so a run dir never resumes a different configuration."""

    def __init__(self, run_dir: Path, every: int, config_hash: str, steps: int | None = None):
        self.path = Path(run_dir) / FILENAME
        self.every = every
        self.config_hash = config_hash
        self.steps = steps  # the run's; a saved step must lie below it (None: not checked)
        self._checked_state = _UNREAD  # what `load` read, handed on to restore

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, model: nn.Module, optimizer, scheduler, method: Method, loop: dict) -> None:
        state = {
            "config_hash": self.config_hash,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "method": method.state_dict(),
            "loop": loop,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            },
        }
        with atomic_path(self.path) as temporary:
            torch.save(state, temporary)

    def load(self) -> None:
        """Read the saved state, if any, refusing one this run could not resume (unreadable, or of
        another configuration) before the run writes anything into its dir; `check_fits` and
        `restore` use what it read."""
        self._checked_state = self._load()

    def check_fits(self, model: nn.Module, optimizer, scheduler, method_as_set_up: Method, splits: Splits) -> None:
        """Refuse a checkpoint that does not fit this run, before the run writes into its dir: its
        tensors not this model's, its optimizer or schedule not where this configuration's schedule
        is at the saved step, its loop or method state not of this run's data. One of this
        configuration always fits, so a misfit is a crafted or damaged file. Compared, not loaded,
        as `restore` loads it all at once later: the method's state goes into a copy of
        `method_as_set_up`, the run's method set up for `splits`."""
        if self._checked_state is _UNREAD:
            self._checked_state = self._load()
        state = self._checked_state
        if state is None:
            return
        step = state["loop"]["step"]
        problem = (
            network_problem(state["model"], state["optimizer"], state["scheduler"], model, optimizer, scheduler, step)
            or _part("loop state", loop_data_problem(state["loop"], splits))
            or _part("method", _method_problem(state["method"], method_as_set_up))
        )
        if problem:
            raise UserError(f"{self.path} does not fit this run's {problem}; {START_OVER}")

    def restore(self, model: nn.Module, optimizer, scheduler, method: Method) -> dict | None:
        """Load the saved state into the objects and return the loop's; None when there is none."""
        state = self._load() if self._checked_state is _UNREAD else self._checked_state
        self._checked_state = _UNREAD  # a checkpoint can be hundreds of MB: not kept twice
        if state is None:
            return None
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            method.load_state_dict(state["method"])
            rng = state["rng"]
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            step = state["loop"]["step"]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError, RuntimeError) as error:  # another shape
            raise UserError(f"{self.path} does not fit this run's model or method ({_first_line(error)}); {START_OVER}") from None
        print(f"resuming from step {step} of {self.path}", file=sys.stderr)
        return state["loop"]

    def _load(self) -> dict | None:
        """The saved state, checked to be a checkpoint of this configuration; None when there is none."""
        if not self.path.exists():
            return None
        if not self.path.is_file():  # opening a pipe would block until someone writes to it
            raise UserError(f"{self.path} is not a regular file (a directory, device or pipe); {START_OVER}")
        try:
            with torch.serialization.safe_globals(NUMPY_STATE_GLOBALS), warnings.catch_warnings():
                # torch warns of a pickle protocol it does not expect; the file is read or refused anyway
                warnings.filterwarnings("ignore", "Detected pickle protocol")
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message advises weights_only=False, which would run whatever the file holds
            text = str(error)
            if found := re.search(r"GLOBAL (\S+) was not an allowed global", text):
                raise UserError(
                    f"{self.path} holds {found[1]}, which no l2rw checkpoint holds; it was not loaded, as that "
                    f"could run code from it: {START_OVER}"
                ) from None
            detail = _first_line(text.split("WeightsUnpickler error:")[-1])
            raise UserError(
                f"{self.path} cannot be read as a checkpoint (UnpicklingError: {detail}); {START_OVER}"
            ) from None
        except Exception as error:
            raise UserError(
                f"{self.path} cannot be read as a checkpoint ({type(error).__name__}: {_first_line(error)}); {START_OVER}"
            ) from error
        if not (isinstance(state, dict) and state.keys() == STATE_KEYS and isinstance(state.get("config_hash"), str)):
            raise UserError(f"{self.path} is not an l2rw checkpoint; {START_OVER}, or set another hydra.run.dir")
        if state["config_hash"] != self.config_hash:
            raise UserError(
                f"{self.path} belongs to another configuration (config_hash {state['config_hash']}, "
                f"this one is {self.config_hash}); set another hydra.run.dir or delete the file"
            )
        if problem := _loop_problem(state["loop"], self.steps):
            raise UserError(f"{self.path} holds a loop state no run saves ({problem}); {START_OVER}")
        if problem := _rng_problem(state["rng"]):
            raise UserError(f"{self.path} holds random states no run saves ({problem}); {START_OVER}")
        return state


def _loop_problem(loop: object, steps: int | None) -> str | None:
    """Why `loop` cannot be the trainer's LoopState of a run of `steps` steps; None when it can.
    Keys left out take LoopState's defaults."""
    if not isinstance(loop, dict) or "step" not in loop:
        return "no loop step"
    hints = typing.get_type_hints(LoopState)
    for name, value in loop.items():
        if name not in hints:
            return f"unknown key {name!r}"
        if not isinstance(value, _runtime_types(hints[name])) or isinstance(value, bool):
            return f"{name} is a {type(value).__name__}"
    if loop["step"] < 0:
        return f"step {loop['step']} is negative"
    for name, value in loop.items():
        if hints[name] is int and name != "step" and not 0 <= value <= loop["step"]:  # counts of steps
            return f"{name} {value} is not a count of steps up to {loop['step']}"
        if hints[name] is float and not math.isfinite(value):
            return f"{name} is {value}"
    if steps is not None and loop["step"] >= steps:  # fit would run no step, so have no evaluation to return
        return f"step {loop['step']} is not below this run's steps={steps}"
    return None


def _rng_problem(rng: object) -> str | None:
    """Why `rng` cannot be Checkpoint.save's random states; None when it can. Each state is tried
    on a generator of its own kind, which checks it as setting the global one would."""
    if not isinstance(rng, dict) or rng.keys() != {"python", "numpy", "torch", "cuda"}:
        return "not the python, numpy, torch and cuda states"
    setters = {"python": random.Random().setstate, "numpy": np.random.RandomState().set_state,
               "torch": torch.Generator().set_state}
    for name, set_state in setters.items():
        try:
            set_state(rng[name])
        except (IndexError, KeyError, TypeError, ValueError, RuntimeError) as error:  # each library's own refusals
            return f"{name}: {type(error).__name__}: {_first_line(error)}"
    cuda = rng["cuda"]
    if cuda is not None and not (isinstance(cuda, list) and all(isinstance(t, torch.ByteTensor) for t in cuda)):
        return "cuda is not a list of byte tensors"
    return None


def _method_problem(saved: object, method_as_set_up: Method) -> str | None:
    """Why the method, set up for the run's data, cannot load the saved state; None when it can.
    Loaded into a copy: the run sets up and loads its own later."""
    try:
        copy.deepcopy(method_as_set_up).load_state_dict(saved)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, RuntimeError) as error:  # each part's own refusals
        return _first_line(error)
    return None


def _part(part: str, problem: str | None) -> str | None:
    return problem and f"{part} ({problem})"


def _runtime_types(hint) -> tuple[type, ...]:
    """The classes an annotation admits, to isinstance against: list[float] | None -> (list, NoneType);
    an int stands for a float, as type checkers allow."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    classes = tuple(typing.get_origin(option) or option for option in options)
    return classes + (int,) if float in classes else classes


def _first_line(error: BaseException | str) -> str:
    return (str(error).strip().splitlines() or [""])[0]
