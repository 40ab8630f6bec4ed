"""Fixtures the test modules share; what they build lives in tests/helpers/.

torch and the helpers are imported where they are used: under pytest-xdist the process that hands
out the tests loads this file too and runs none, and its start delays every worker's."""
import collections
import os

import pytest


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        # torch starts a thread per core in every worker: with `-n 2` on two cores, four threads
        # whose every operation waits for the slowest, which makes small tensors many times slower
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, cores // workers))


@pytest.fixture(autouse=True)
def torch_threads():
    """A run through the command line sets torch's threads to its job's share of the cores: the tests
    after it run with the threads they would have had without it."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """The user's cache (dataset=folder's default `cache_dir`) in the tests' temporary folder, never
    in the real home; one for the whole session, as a user has one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "user_cache"))


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/config.yaml with FAST settings, outputs under tmp_path, then `overrides`."""
    from tests.helpers.configs import FAST, compose_config

    def _make(*overrides: str):
        # skip_done=false: tests train one configuration twice on purpose (reproducibility)
        return compose_config(*FAST, f"results_csv={tmp_path / 'results.csv'}", "skip_done=false", *overrides)

    return _make


@pytest.fixture
def optimizer_steps(monkeypatch) -> collections.Counter:
    """torch.optim.SGD.step calls, counted per optimizer: a run's model is trained by one SGD
    optimizer (Meta-Weight-Net's weight net by SGD under `variant=imbalance`, by Adam otherwise), so
    a test of a run that "trains" sees its updates as `list(optimizer_steps.values()) == [steps - skipped_steps]`."""
    import torch

    counts = collections.Counter()
    real_step = torch.optim.SGD.step

    def counted_step(self, *args, **kwargs):
        counts[id(self)] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
    return counts
