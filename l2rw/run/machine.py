"""Machine facts a run needs: the cores this process may use, and one job's share of them."""
from __future__ import annotations

import os

from omegaconf import DictConfig


def usable_cores() -> int:
    """The cores this process may run on: SLURM confines a job to its allocated cores; macOS
    has no affinity call, so there it is every core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def threads_per_job(launcher: DictConfig) -> int:
    """Torch threads for one job: the launcher's `cpus_per_task` (submitit) when set, else the
    cores this process may use divided by the jobs joblib runs at once (`n_jobs`, negative
    counting back from all cores as joblib does), so parallel jobs don't oversubscribe cores."""
    if launcher.get("cpus_per_task"):
        return launcher.cpus_per_task
    return max(1, usable_cores() // jobs_at_once(launcher.get("n_jobs")))


def jobs_at_once(n_jobs: int | None) -> int:
    """How many jobs joblib runs at once for `n_jobs` (None: 1; -1 every core, -2 all but one, ...)."""
    parallel = n_jobs or 1
    if parallel < 0:
        parallel = usable_cores() + 1 + parallel
    return max(parallel, 1)
