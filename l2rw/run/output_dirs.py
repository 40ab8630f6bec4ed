"""Hydra makes the run dir (or the sweep dir, then each job's dir under it) before l2rw's code runs,
and a dir it cannot make ends in its traceback. This callback tries the same dirs first and turns
a failure into one line and exit code 2, before anything is written. The current folder is refused
too: a run's files (config.yaml, metrics.csv, Hydra's .hydra/) would land among the user's."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from l2rw.run.compose_errors import basic_sweep_grid
from l2rw.run.identity import config_hash


def creatable(path: Path) -> str | None:
    """Why `path` cannot be made as a folder, or None when it can. What the check creates is
    removed again, also when only some of it could be made: Hydra makes the dir itself, possibly
    under another timestamp."""
    path = Path(os.path.normpath(path))  # without `..`, every missing ancestor is one the check may make
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
    finally:
        for made in missing:  # deepest first; each was absent before, so removing it when empty is safe
            with contextlib.suppress(OSError):  # not made: the mkdir failed above it
                made.rmdir()
    return None


def is_current_folder(path: str) -> bool:
    """An empty path (an unset shell variable) is the current folder too."""
    return os.path.abspath(path) == os.path.abspath(os.getcwd())


def as_typed(value: str) -> str:
    """A path as the command line writes it: '' for an empty one."""
    return value or "''"


def refuse_unless_usable(key: str, value: str, path: str | None = None) -> None:
    """One line and exit code 2 when the dir at `path` (the value of `key` itself when None) is the
    current folder or cannot be made."""
    path = value if path is None else path
    if is_current_folder(path):
        print(f"error: {key}={as_typed(value)} is the current folder, where the run's files would overwrite yours; choose a "
              f"folder of its own, e.g. {key}=outputs/my_run", file=sys.stderr)
        sys.exit(2)
    if problem := creatable(Path(path)):
        where = "" if path == value else f" {path}"
        print(f"error: {key}={as_typed(value)}: cannot make this folder{where} ({problem}); choose another path", file=sys.stderr)
        sys.exit(2)


def job_dirs(config: DictConfig) -> list[tuple[str, str]]:
    """Each job's dir, the sweep dir joined with its resolved `hydra.sweep.subdir` as Hydra's run_job
    resolves it, and its config_hash; empty for a sweeper other than the basic one, which picks its
    trials while it runs."""
    loader = GlobalHydra.instance().config_loader()
    jobs = basic_sweep_grid(loader, config) or []
    launched_config = HydraConfig.instance().cfg
    dirs = []
    try:
        for number, overrides in enumerate(jobs):
            job = loader.load_sweep_config(config, list(overrides))
            with open_dict(job):
                job.hydra.job.id = job.hydra.job.num = number
            HydraConfig.instance().set_config(job)  # the subdir may read the job's hydra node (${hydra:job.num})
            job_dir = os.path.join(str(job.hydra.sweep.dir), str(OmegaConf.select(job, "hydra.sweep.subdir")))
            dirs.append((job_dir, config_hash(job)))
    finally:
        HydraConfig.instance().cfg = launched_config
    return dirs


def refuse_shared_job_dirs(subdir: str, dirs: list[tuple[str, str]]) -> None:
    """Two jobs that differ in one dir would overwrite each other's files (two that do not are one
    run: the second finds the first's row, or reruns it)."""
    first_job = {}
    for number, (job_dir, job_hash) in enumerate(dirs):
        other, other_hash = first_job.setdefault(os.path.abspath(job_dir), (number, job_hash))
        if other_hash != job_hash:
            print(f"error: hydra.sweep.subdir={as_typed(subdir)} gives jobs #{other} and #{number}, which differ, the same "
                  f"dir {job_dir}; make it name what differs between jobs (the default holds ${{config_hash:}})", file=sys.stderr)
            sys.exit(2)


class CheckOutputDirs(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unless_usable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unless_usable("hydra.sweep.dir", config.hydra.sweep.dir)
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]
        dirs = job_dirs(config)
        for job_dir, _ in dirs:
            refuse_unless_usable("hydra.sweep.subdir", subdir, job_dir)
        refuse_shared_job_dirs(subdir, dirs)
