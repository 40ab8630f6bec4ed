"""logger=tensorboard|mlflow: what each writes reads back; a missing package is one line naming its
install command; a logger that fails mid-run is dropped with one warning and the run goes on."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from l2rw.errors import UserError
from l2rw.run.config_schema import check_config
from l2rw.run.identity import config_hash
from l2rw.tracking import RunLogger, RunLoggers
from tests.helpers.command_line import run_cli

EVALUATION = {"step": 10, "train_loss": 1.5, "balanced_accuracy": 0.5, "val_balanced_accuracy": 0.55, "weight_noisy": "",
              "recall/T-shirt/top": 0.25, "recall/Sandal": 0.75}
ROW = {"status": "ok", "balanced_accuracy": 0.5, "val_balanced_accuracy": 0.55, "best_balanced_accuracy": "", "wall_seconds": 3.0}
CONFIG = {"lr": 0.1, "method": {"name": "l2rw"}, "noise": {"kind": "flip", "flip_to": None}, "dataset": {"classes": [0, 1]},
          "results_csv": "results.csv"}


# per-example mean weights as an evaluation hands them over: NaN for an example no step has used yet
EXAMPLE_WEIGHTS = torch.tensor([0.0, 1.0, 2.5, float("nan")])


def finished_run(run_dir: Path, *loggers: RunLogger, example_weights: torch.Tensor = EXAMPLE_WEIGHTS) -> RunLoggers:
    """Each logger through a whole run: start, two evaluations, the row, close."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.csv").write_text("step\n10\n20\n")
    reporting = RunLoggers({type(logger).__name__: logger for logger in loggers})
    with reporting.watching(run_dir, CONFIG):
        for step in (10, 20):
            reporting.log_evaluation(step, EVALUATION | {"step": step}, example_weights)
        reporting.finish(ROW, run_dir)
    return reporting


def test_tensorboard_events_hold_scalars_per_evaluation_the_weight_histogram_and_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from l2rw.tracking.tensorboard_logger import TensorBoardLogger

    finished_run(tmp_path, TensorBoardLogger())
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"balanced_accuracy", "val_balanced_accuracy", "train_loss", "recall/T-shirt/top", "hparam/balanced_accuracy"} <= set(tags["scalars"])
    assert "weight_noisy" not in tags["scalars"]  # an empty metrics.csv cell is no point
    assert [event.step for event in events.Scalars("balanced_accuracy")] == [10, 20]
    assert tags["histograms"] == ["example_weight"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def tensorboard_events(run_dir: Path, example_weights: torch.Tensor):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from l2rw.tracking.tensorboard_logger import TensorBoardLogger

    reporting = finished_run(run_dir, TensorBoardLogger(), example_weights=example_weights)
    assert list(reporting.loggers) == ["TensorBoardLogger"]  # not dropped after a failure
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"histograms": 0})  # 0: every step's, not the last only
    events.Reload()
    return events


def test_the_weight_histogram_holds_only_the_examples_that_have_a_weight(tmp_path):
    """A NaN would make the histogram's min, max and sum NaN: TensorBoard draws nothing readable."""
    events = tensorboard_events(tmp_path, EXAMPLE_WEIGHTS)
    weighted = torch.tensor([0.0, 1.0, 2.5])  # EXAMPLE_WEIGHTS without the unused example
    for event in events.Histograms("example_weight"):
        histogram = event.histogram_value
        assert (histogram.num, histogram.min, histogram.max) == (len(weighted), weighted.min().item(), weighted.max().item())
        assert histogram.sum == pytest.approx(weighted.sum().item())
    assert [event.step for event in events.Histograms("example_weight")] == [10, 20]


def test_a_uniform_method_with_unused_examples_writes_no_weight_histogram(tmp_path):
    events = tensorboard_events(tmp_path, torch.tensor([1.0, 1.0, float("nan")]))
    assert events.Tags()["histograms"] == []


@pytest.mark.slow  # a real MLflow SQLite store: its schema migrations alone take seconds
def test_mlflow_runs_read_back_with_params_metrics_artifacts_and_their_sweep_as_parent(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from l2rw.tracking.mlflow_logger import PARENT_RUN_ENV, MlflowLogger, MlflowSweepRun

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    sweep = MlflowSweepRun()
    config = OmegaConf.create({"logger": {"mlflow": {"tracking_uri": uri, "experiment": None}}, "results_csv": "results.csv",
                               "hydra": {"sweep": {"dir": str(tmp_path / "multirun")}}})
    sweep.on_multirun_start(config)
    finished_run(tmp_path / "multirun" / "job0", MlflowLogger(tracking_uri=uri))
    sweep.on_multirun_end(config)
    assert PARENT_RUN_ENV not in os.environ

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(str(tmp_path / "results.csv"))  # one experiment per results_csv
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    job, parent = runs[str(tmp_path / "multirun" / "job0")], runs[f"sweep {tmp_path / 'multirun'}"]
    assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert job.info.status == parent.info.status == "FINISHED"
    assert job.data.params["lr"] == "0.1" and job.data.params["dataset.classes"] == "[0, 1]"
    assert [m.step for m in client.get_metric_history(job.info.run_id, "balanced_accuracy")] == [10, 20]
    assert job.data.metrics["recall/T-shirt/top"] == 0.25 and job.data.metrics["final/val_balanced_accuracy"] == 0.55
    assert "final/best_balanced_accuracy" not in job.data.metrics  # an empty cell is no metric
    assert {artifact.path for artifact in client.list_artifacts(job.info.run_id)} == {"metrics.csv"}
    assert Path(tmp_path / "store" / "mlflow-artifacts").is_dir()  # beside the database, not ./mlruns
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_package_is_one_line_naming_the_install_command(make_cfg, monkeypatch, logger, package):
    monkeypatch.setitem(sys.modules, package, None)  # what `import` sees when it is not installed
    with pytest.raises(UserError, match=rf"^logger={logger} needs .* pip install -e '\.\[{logger}\]'$"):
        RunLoggers.from_config(make_cfg(f"logger={logger}"))


def test_loggers_combine_and_leave_the_config_hash_alone(make_cfg):
    both = make_cfg("logger=[tensorboard,mlflow]")
    assert set(both.logger) == {"tensorboard", "mlflow"}
    assert dict(make_cfg().logger) == {}
    assert config_hash(both) == config_hash(make_cfg())  # where a run is watched is not what it learns


def test_logger_options_are_checked_before_a_run(make_cfg):
    with pytest.raises(UserError, match=r"^logger\.tensorboard\.subdir=1 must be a folder name"):
        check_config(make_cfg("logger=tensorboard", "logger.tensorboard.subdir=1"))
    with pytest.raises(UserError, match=r"^logger\.mlflow\.tracking_ur is not an option of logger=mlflow"):
        check_config(make_cfg("logger=mlflow", "+logger.mlflow.tracking_ur=x"))


class BrokenLogger(RunLogger):
    """Fails at its first evaluation, as a full disk or a locked database would."""

    calls = 0

    def log_evaluation(self, step, values, example_weights):
        BrokenLogger.calls += 1
        raise OSError(28, "No space left on device")


class CountingLogger(RunLogger):
    def __init__(self):
        self.steps, self.rows, self.finished = [], [], None

    def log_evaluation(self, step, values, example_weights):
        self.steps.append(step)

    def finish(self, row, run_dir):
        self.rows.append(row)

    def close(self, finished):
        self.finished = finished


def test_a_failing_logger_is_warned_about_once_and_the_others_go_on(tmp_path):
    warnings, counting = [], CountingLogger()
    BrokenLogger.calls = 0
    reporting = RunLoggers({"broken": BrokenLogger(), "counting": counting}, warn=warnings.append)
    with reporting.watching(tmp_path, CONFIG):
        for step in (10, 20, 30):
            reporting.log_evaluation(step, {}, torch.ones(3))
        reporting.finish(ROW, tmp_path)
    assert BrokenLogger.calls == 1 and len(warnings) == 1
    assert warnings[0].startswith("warning: logger=broken failed (OSError: [Errno 28] No space left on device)")
    assert counting.steps == [10, 20, 30] and counting.rows == [ROW] and counting.finished is True


def test_the_loggers_are_closed_unfinished_when_the_run_fails_after_training(tmp_path):
    counting = CountingLogger()
    reporting = RunLoggers({"counting": counting}, warn=pytest.fail)
    with pytest.raises(OSError), reporting.watching(tmp_path, CONFIG):
        reporting.log_evaluation(10, {}, torch.ones(3))
        raise OSError(28, "No space left on device")  # as writing the run files on a full disk would
    assert counting.steps == [10] and counting.rows == [] and counting.finished is False


@pytest.mark.slow
def test_a_logger_failing_mid_run_costs_neither_the_run_nor_its_row(tmp_path):
    done = run_cli("steps=20", "eval_every=10", "progress=false", f"results_csv={tmp_path / 'results.csv'}",
                   f"hydra.run.dir={tmp_path / 'run'}", "+logger.broken._target_=tests.test_loggers.BrokenLogger", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: logger=broken failed") == 1
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 2


@pytest.mark.slow
def test_a_sweep_is_watched_in_tensorboard_and_mlflow(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli("--multirun", "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}", "seed=0,1", "steps=20",
                   "eval_every=10", "progress=false", "dataset.val_per_class=5", f"results_csv={tmp_path / 'results.csv'}",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "multirun").glob("*/tensorboard/events.out.tfevents.*"))) >= 2
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(str(tmp_path / "results.csv")).experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    assert all(run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for run in runs if run is not parents[0])
    assert all("final/val_balanced_accuracy" in run.data.metrics for run in runs if run is not parents[0])


@pytest.mark.slow
def test_the_cli_names_the_install_command_before_training(tmp_path):
    # a module that shadows the package with one that fails to import, as an absent one does
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "tensorboard.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{Path(__file__).resolve().parents[1]}"}
    done = subprocess.run([sys.executable, "-m", "l2rw.run.train", "logger=tensorboard", "steps=20", "progress=false",
                           f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: logger=tensorboard needs the optional package tensorboard, which is not installed; "
        "install it with: pip install -e '.[tensorboard]'"]
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run" / "metrics.csv").exists()


def test_a_pruned_trial_stops_the_run_where_a_failing_logger_would_not(tmp_path):
    from l2rw.run.trial_pruning import TrialPruned

    def pruning_trial(step, values):
        raise TrialPruned(f"pruned at step {step}")

    counting = CountingLogger()
    reporting = RunLoggers({"counting": counting}, warn=pytest.fail, trial=pruning_trial)
    with pytest.raises(TrialPruned, match="pruned at step 10"):
        reporting.log_evaluation(10, {}, torch.ones(3))
    assert counting.steps == [10]  # the loggers heard the evaluation first
