"""What sweeps need from each job: an identity for its configuration, and its share of the cores.

`config_hash` names result rows (so `skip_done` recognises finished configurations) and sweep
subdirs (so a relaunched or requeued job finds its own checkpoint). Importing `l2rw` registers
the `${config_hash:}` resolver: Hydra resolves `hydra.sweep.subdir` in each job's process (joblib
worker, submitit job) after unpickling the task, which imports this package.
"""
from __future__ import annotations

import hashlib
import json
import os

from omegaconf import DictConfig, OmegaConf

# Keys that change where things are written or shown, or how fast, never what is learned.
NOT_HASHED = ("results_csv", "progress", "threads", "checkpoint_every", "skip_done")


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits of the resolved config (seed included) minus NOT_HASHED and `hydra`."""
    kept = [key for key in cfg if key not in NOT_HASHED and key != "hydra"]
    resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


def _config_hash_resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


OmegaConf.register_new_resolver("config_hash", _config_hash_resolver, replace=True)


def usable_cores() -> int:
    """The cores this process may run on: SLURM confines a job to its allocated cores; macOS
    has no affinity call, so there it is every core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def threads_per_job(launcher: DictConfig) -> int:
    """Torch threads for one job: the launcher's `cpus_per_task` (submitit) when set, else the
    cores this process may use divided by the jobs joblib runs at once (`n_jobs`, negative
    counting back from all cores as joblib does), so parallel jobs don't oversubscribe cores."""
    cores = usable_cores()
    if launcher.get("cpus_per_task"):
        return launcher.cpus_per_task
    parallel = launcher.get("n_jobs") or 1
    if parallel < 0:
        parallel = cores + 1 + parallel
    return max(1, cores // max(parallel, 1))
