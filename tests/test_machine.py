"""l2rw.run.machine: how many torch threads a job gets when `threads` is null."""
import os

from omegaconf import OmegaConf

from l2rw.run.machine import threads_per_job


def test_threads_are_the_jobs_share_of_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(OmegaConf.create({})) == cores  # one job at a time
    assert threads_per_job(OmegaConf.create({"n_jobs": 2})) == max(1, cores // 2)
    assert threads_per_job(OmegaConf.create({"n_jobs": -1})) == 1  # joblib: as many jobs as cores
    assert threads_per_job(OmegaConf.create({"cpus_per_task": 3, "gpus_per_node": 1})) == 3
