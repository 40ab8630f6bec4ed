"""Checkpoints: everything a run needs to go on exactly where it stopped, written atomically.

A run dir holding `checkpoint.pt` resumes from it; the run then ends with the same metrics as
an uninterrupted run (CPU). The file is removed once the run's results row is written.
"""
from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from l2rw.errors import UserError
from l2rw.methods.base import Method
from l2rw.results import atomic_path

FILENAME = "checkpoint.pt"


class Checkpoint:
    """`run_dir/checkpoint.pt`, saved every `every` steps (0: only on Ctrl-C), tagged with the
    config hash so a run dir never resumes a different configuration."""

    def __init__(self, run_dir: Path, every: int, config_hash: str):
        self.path = Path(run_dir) / FILENAME
        self.every = every
        self.config_hash = config_hash

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

    def restore(self, model: nn.Module, optimizer, scheduler, method: Method) -> dict | None:
        """Load the saved state into the objects and return the loop's; None when there is none."""
        if not self.path.exists():
            return None
        # weights_only=False: the file is this run's own and holds Python/NumPy RNG states
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state["config_hash"] != self.config_hash:
            raise UserError(
                f"{self.path} belongs to another configuration (config_hash {state['config_hash']}, "
                f"this one is {self.config_hash}); set another hydra.run.dir or delete the file"
            )
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
        print(f"resuming from step {state['loop']['step']} of {self.path}", file=sys.stderr)
        return state["loop"]


class DeferredInterrupt:
    """Ctrl-C (SIGINT) only sets `requested`, so the loop stops after a whole step and saves a
    consistent checkpoint; a second Ctrl-C interrupts at once. Signals reach the main thread
    only, so elsewhere (or when not `enabled`) this does nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self) -> DeferredInterrupt:
        self.requested = False
        self.previous = None
        if self.enabled and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exception) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
