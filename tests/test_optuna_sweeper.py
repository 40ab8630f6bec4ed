"""hydra/sweeper=optuna: search spaces in Hydra's sweep syntax, trials as ordinary runs with their
rows, a study in SQLite that a killed sweep resumes, validation objectives only, the best trial
printed at the end; +tune=fashion_mnist's spaces per method and loss."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from l2rw.errors import UserError

optuna = pytest.importorskip("optuna")

from hydra_plugins.l2rw_optuna_sweeper.search_space import as_override, parse  # noqa: E402
from hydra_plugins.l2rw_optuna_sweeper.sweeper import OptunaSweeper  # noqa: E402
from l2rw.run.trial_pruning import TrialPruned, TrialReporter  # noqa: E402
from tests.helpers.configs import compose_config  # noqa: E402

TINY = ["steps=20", "eval_every=10", "progress=false", "dataset.val_per_class=5"]


def sweeper(**options) -> OptunaSweeper:
    defaults = {"n_trials": 2, "n_jobs": 1, "metric": "val_balanced_accuracy", "direction": "maximize", "sampler": "tpe",
                "seed": 0, "pruner": "none", "storage": None, "study_name": None, "params": {}, "spaces": {}}
    return OptunaSweeper(**(defaults | options))


def sweep_command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "l2rw.run.train", "--multirun", "hydra/sweeper=optuna", *TINY, "lr=tag(log,interval(0.01,0.5))",
            "momentum=choice(0,0.9)", f"results_csv={tmp_path / 'results.csv'}", f"hydra.sweep.dir={tmp_path / 'multirun'}", *args]


def environment() -> dict:
    return os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def rows(tmp_path: Path) -> list[str]:
    results = tmp_path / "results.csv"
    return results.read_text().splitlines()[1:] if results.exists() else []


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    space, fixed = parse(["lr=tag(log,interval(0.01,1))", "method.smoothing=interval(0,0.97)", "momentum=choice(0,0.9)",
                          "steps=tag(int,interval(10,40))", "seed=range(0,3)", "method=l2rw"])
    assert space["lr"] == optuna.distributions.FloatDistribution(0.01, 1, log=True)
    assert space["method.smoothing"] == optuna.distributions.FloatDistribution(0, 0.97)
    assert space["momentum"] == optuna.distributions.CategoricalDistribution([0, 0.9])
    assert space["steps"] == optuna.distributions.IntDistribution(10, 40)
    assert space["seed"] == optuna.distributions.CategoricalDistribution([0, 1, 2])
    assert fixed == ["method=l2rw"]
    assert [as_override("noise.flip_to", None), as_override("meta.add_to_train", True)] == ["noise.flip_to=null", "meta.add_to_train=true"]
    assert [as_override("lr", 0.12520653814999466), as_override("lr", 1e-05), as_override("momentum", 0)] == ["lr=0.125", "lr=1e-05", "momentum=0"]


def test_an_unknown_tag_is_refused_by_name():
    with pytest.raises(UserError, match=r"^lr: tag sqrt is not a search option"):
        parse(["lr=tag(sqrt,interval(0.01,1))"])


@pytest.mark.parametrize("metric", ["balanced_accuracy", "best_balanced_accuracy", "accuracy"])
def test_a_test_column_as_objective_is_refused_in_one_line(metric, capsys):
    with pytest.raises(SystemExit) as exit_code:
        sweeper(metric=metric).sweep(["lr=interval(0.01,1)"])
    assert exit_code.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: hydra.sweeper.metric={metric}: choose on a validation column (val_...); "
        "choosing on the test set would overstate the chosen setting's test score"]


def test_without_optuna_the_error_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` sees when it is not installed
    with pytest.raises(SystemExit):
        sweeper().sweep(["lr=interval(0.01,1)"])
    assert capsys.readouterr().err.strip() == ("error: hydra/sweeper=optuna needs the optional package optuna, which is not "
                                               "installed; install it with: pip install -e '.[optuna]'")


def compose_with_hydra(*overrides: str):
    return compose_config(*overrides, hydra_config=True)


class ScoringLauncher:
    """Runs no training: each trial's row scores its lr override as val_balanced_accuracy."""

    def __init__(self):
        self.scores: list[float] = []

    def launch(self, overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for job in overrides:
            (lr,) = [float(override.removeprefix("lr=")) for override in job if override.startswith("lr=")]
            self.scores.append(lr)
            returns.append(JobReturn(overrides=job, status=JobStatus.COMPLETED,
                                     _return_value={"status": "ok", "val_balanced_accuracy": lr}))
        return returns


@pytest.mark.parametrize("direction, best", [("minimize", min), ("maximize", max)])
def test_the_direction_decides_which_trial_is_best(tmp_path, capsys, direction, best):
    cfg = compose_with_hydra("hydra/sweeper=optuna", f"hydra.sweeper.direction={direction}", "hydra.sweeper.n_trials=6",
                             "hydra.sweeper.sampler=random", "dataset.val_per_class=5", f"results_csv={tmp_path / 'results.csv'}")
    chosen = instantiate(cfg.hydra.sweeper)
    chosen.config, chosen.launcher = cfg, ScoringLauncher()
    chosen.sweep(["lr=interval(0.01,1)"])
    scores = chosen.launcher.scores
    assert len(scores) == 6 and len(set(scores)) == 6
    assert f"optuna: best of 6 trial(s): val_balanced_accuracy {best(scores):.4f}" in capsys.readouterr().out
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.best_value == best(scores)


@pytest.mark.parametrize("choice, knob", [("method=l2rw", "method.smoothing"), ("method=mwnet", "method.meta_lr"),
                                          ("+recipe=ldam_drw", "loss.max_margin"), ("+recipe=gce", "loss.q")])
def test_the_fashion_mnist_preset_searches_each_methods_knobs(choice, knob):
    cfg = compose_with_hydra("+tune=fashion_mnist", choice)
    assert cfg.dataset.name == "fashion_mnist" and cfg.dataset.val_per_class == 100 and cfg.hydra.launcher.n_jobs == 2
    chosen = instantiate(cfg.hydra.sweeper)  # as Hydra builds it: nested options arrive as DictConfig
    chosen.config = cfg
    space = chosen.preset_space()
    assert {"lr", knob} <= set(space["params"]) and space["n_trials"] >= 20


def test_a_method_the_preset_has_no_space_for_is_named():
    cfg = compose_with_hydra("+tune=fashion_mnist", "method=sgd", "loss=ldam")
    chosen = sweeper(spaces=OmegaConf.to_container(cfg.hydra.sweeper.spaces))
    chosen.config = cfg
    with pytest.raises(UserError, match=r"^the preset has no search space for method=sgd loss=ldam"):
        chosen.preset_space()


def test_a_run_below_the_median_curve_is_pruned(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for _ in range(5):  # the median pruner's startup trials
        trial = study.ask()
        for step in (10, 20):
            trial.report(0.9, step)
        study.tell(trial, 0.9)
    running = study.ask()
    last = TrialReporter(storage, "s", running._trial_id, "val_balanced_accuracy", "median", last_step=20)
    last(20, {"val_balanced_accuracy": 0.2})  # trained to the end: finishing costs nothing more
    running = study.ask()
    reporter = TrialReporter(storage, "s", running._trial_id, "val_balanced_accuracy", "median", last_step=2000)
    reporter(10, {"val_balanced_accuracy": ""})  # an evaluation without the metric reports nothing
    with pytest.raises(TrialPruned, match="pruned at step 20: its val_balanced_accuracy 0.2000 is below the median"):
        reporter(20, {"val_balanced_accuracy": 0.2})
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED


@pytest.mark.slow
def test_each_trial_is_a_run_with_its_row_and_the_best_is_printed(tmp_path):
    done = subprocess.run(sweep_command(tmp_path, "hydra.sweeper.n_trials=3"), cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(rows(tmp_path)) == 3
    assert (tmp_path / "optuna.db").is_file()  # beside results_csv
    best = done.stdout[done.stdout.index("optuna: best of 3 trial(s): val_balanced_accuracy"):]
    assert "best overrides: lr=" in best and "sweep summary: 3 row(s)" in best  # just before the sweep's table


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_a_resumed_study_does_not_replay_its_first_draws(kind):
    from hydra_plugins.l2rw_optuna_sweeper.sweeper import make_sampler

    space = {"lr": optuna.distributions.FloatDistribution(0.01, 1, log=True)}
    study = optuna.create_study(sampler=make_sampler(optuna, kind, seed=0), direction="maximize")
    first = [study.ask(space) for _ in range(3)]
    for trial in first:
        study.tell(trial, trial.params["lr"])
    again = optuna.create_study(sampler=make_sampler(optuna, kind, seed=0)).ask(space).params["lr"]
    assert again == first[0].params["lr"]  # the same command asks the same trials
    study.sampler = make_sampler(optuna, kind, seed=0, trials_so_far=len(study.trials))
    assert study.ask(space).params["lr"] not in [trial.params["lr"] for trial in first]


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_the_largest_seed_still_seeds_a_resumed_study(kind):
    from hydra_plugins.l2rw_optuna_sweeper.sweeper import SEED_MAX, make_sampler

    study = optuna.create_study(sampler=make_sampler(optuna, kind, seed=SEED_MAX, trials_so_far=3))
    assert 0.01 <= study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 1)}).params["lr"] <= 1


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_study(tmp_path):
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=4")
    killed = subprocess.Popen(command, cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while len(rows(tmp_path)) < 1 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert 1 <= len(rows(tmp_path)) < 4

    resumed = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial(s) finished" in resumed.stdout and "of 4 trial(s) finished" in resumed.stdout
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")  # the only study there
    counted = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len(counted) == 4
    # each trial's run wrote its row once: one killed before its row is asked again and writes it; one
    # killed after its row and before the study heard of it is asked again and skipped (skip_done)
    assert len(rows(tmp_path)) == len({tuple(sorted(trial.params.items())) for trial in counted})


@pytest.mark.slow
def test_median_pruning_stops_runs_below_the_curve_and_the_sweep_goes_on(tmp_path):
    # half the learning rates cannot learn in 100 steps: their curves sit below the median
    command = [sys.executable, "-m", "l2rw.run.train", "--multirun", "hydra/sweeper=optuna", "hydra.sweeper.pruner=median",
               "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=12", "lr=choice(0.09,0.0001)", "seed=range(0,12)",
               "momentum=0.9", "imbalance=0.2", "steps=100", "eval_every=20", "dataset.val_per_class=5", "progress=false",
               f"results_csv={tmp_path / 'results.csv'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pruned at step 40: its val_balanced_accuracy" in done.stderr
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 12
    assert all(f"optuna: trial {t.number} pruned" in done.stdout for t in pruned)
    assert len(rows(tmp_path)) == len({tuple(sorted(t.params.items())) for t in complete})  # a pruned run writes no row
