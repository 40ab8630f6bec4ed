"""Hydra makes the run dir (or the sweep dir) before l2rw's code runs, and a dir it cannot make
ends in its traceback. This callback tries the same dir first and turns a failure into one line
and exit code 2, before anything is written."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def creatable(path: Path) -> str | None:
    """Why `path` cannot be made as a folder, or None when it can. What the check creates is
    removed again: Hydra makes the dir itself, possibly under another timestamp."""
    missing = []
    ancestor = path
    try:  # even asking whether a path exists fails for a name too long
        while not ancestor.exists() and ancestor != ancestor.parent:
            missing.append(ancestor)
            ancestor = ancestor.parent
        if path.exists():
            return None if path.is_dir() else "it exists and is not a folder"
        path.mkdir(parents=True)
    except OSError as error:
        return error.strerror or str(error)
    for made in missing:  # deepest first
        made.rmdir()
    return None


def refuse_unless_creatable(key: str, path: str) -> None:
    if problem := creatable(Path(path)):
        print(f"error: {key}={path}: cannot make this folder ({problem}); choose another path", file=sys.stderr)
        sys.exit(2)


class CheckOutputDirs(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unless_creatable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unless_creatable("hydra.sweep.dir", config.hydra.sweep.dir)
