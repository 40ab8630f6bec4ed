"""logger=mlflow: one MLflow run per job in one experiment per results_csv, nested under a parent
run per --multirun sweep. The default store is a local SQLite file, so nothing needs a server:

    l2rw-train --multirun logger=mlflow method=sgd,l2rw seed=0,1,2
    mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db

The tracking URI is checked where the logger (or a sweep's parent run) is built, before training:
one MLflow cannot open, or a database holding other tables than MLflow's, is one line.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from l2rw.errors import UserError
from l2rw.optional import require
from l2rw.results.table import results_path
from l2rw.run.options import optional, text
from l2rw.tracking.loggers import RunLogger, final_metrics, numbers
from l2rw.tracking.stores import prepare_database, sqlite_file

# The launching process of a sweep starts the parent run (MlflowSweepRun) and hands its id to the
# jobs through the environment, which every launcher's workers inherit.
PARENT_RUN_ENV = "L2RW_MLFLOW_PARENT_RUN_ID"
DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
# MLflow's limits per log_batch call
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000


def client(tracking_uri: str):
    """An MlflowClient on `tracking_uri`, once MLflow can open it (`check_tracking_uri`)."""
    require("mlflow", "mlflow", "logger=mlflow")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_tracking_uri(tracking_uri)
    try:
        return MlflowClient(tracking_uri)
    except (MlflowException, OSError) as error:  # a URI of no kind MLflow stores runs in (bogus://), a folder it cannot make
        raise UserError(f"logger.mlflow.tracking_uri={tracking_uri}: MLflow cannot log there ({first_sentence(error)}); "
                        f"use e.g. {DEFAULT_TRACKING_URI} or http://host:5000") from None


def check_tracking_uri(tracking_uri: str) -> None:
    """A database URI's database must be one MLflow can open and that holds MLflow's tables only
    (l2rw.tracking.stores); other kinds (http://, databricks) are MLflow's to judge."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    if not tracking_uri:
        raise UserError(f"logger.mlflow.tracking_uri is empty; give a tracking URI, e.g. {DEFAULT_TRACKING_URI}")
    scheme = urlparse(tracking_uri).scheme
    if scheme.partition("+")[0] in DATABASE_ENGINES:
        prepare_database("logger.mlflow.tracking_uri", tracking_uri, "MLflow", mlflow_tables())
    elif scheme in ("", "file"):
        check_file_store(tracking_uri)


def check_file_store(tracking_uri: str) -> None:
    """MLflow's file store (a path, or file://path; MLflow 3 takes it only when asked to) is a folder."""
    folder = urlparse(tracking_uri).path if tracking_uri.startswith("file:") else tracking_uri
    if not folder:
        raise UserError(f"logger.mlflow.tracking_uri={tracking_uri} names no folder; use e.g. {DEFAULT_TRACKING_URI}")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise UserError(f"logger.mlflow.tracking_uri={tracking_uri}: {folder} is not a folder, which MLflow's file store "
                        f"is; use e.g. {DEFAULT_TRACKING_URI}")


def mlflow_tables() -> set[str]:
    """Every table MLflow's database holds: importing its database module declares them all."""
    from mlflow.store.db import utils

    return set(utils.Base.metadata.tables) | set(utils.InitialBase.metadata.tables)


def first_sentence(error: Exception) -> str:
    return str(error).strip().splitlines()[0].split(". ")[0].rstrip(".")


def experiment_id(mlflow_client, name: str, tracking_uri: str) -> str:
    """The experiment `name`, made when missing; a SQLite store keeps its artifacts in a folder
    beside the database rather than in ./mlruns of wherever the run was started."""
    from mlflow.exceptions import MlflowException

    if found := mlflow_client.get_experiment_by_name(name):
        return found.experiment_id
    database = sqlite_file(tracking_uri)
    location = (database.parent / "mlflow-artifacts").resolve().as_uri() if database else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # a parallel job made it first
        return mlflow_client.get_experiment_by_name(name).experiment_id


def experiment_name(results_csv: str) -> str:
    """One experiment per results file: its absolute path."""
    return str(results_path(results_csv).resolve())


def metric_name(key: str) -> str:
    """MLflow takes letters, digits, _ - . / : and spaces in a metric's name (class names may have others)."""
    return re.sub(r"[^\w\-./: ]", "_", key)


class MlflowLogger(RunLogger):
    def __init__(
        self,
        tracking_uri: text("an MLflow tracking URI, e.g. sqlite:///outputs/mlflow.db or http://host:5000",
                           doc="the tracking store runs are logged to; a relative SQLite file is relative to where you "
                               "launch, with the artifacts in `mlflow-artifacts/` beside it") = DEFAULT_TRACKING_URI,
        experiment: optional(text("an experiment name"), "for the results_csv path",
                             doc="the MLflow experiment the runs are logged in") = None,
    ):
        self.client = client(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id: str | None = None

    def start(self, run_dir: Path, params: dict) -> None:
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": parent} if (parent := os.environ.get(PARENT_RUN_ENV)) else {}
        experiment = experiment_id(self.client, self.experiment or experiment_name(params["results_csv"]), self.tracking_uri)
        run = self.client.create_run(experiment, run_name=str(run_dir), tags=tags)
        self.run_id = run.info.run_id
        logged = [Param(key, str(value)) for key, value in params.items()]
        for i in range(0, len(logged), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=logged[i : i + PARAMS_PER_BATCH])

    def log_evaluation(self, step: int, values: dict, example_weights: torch.Tensor) -> None:
        self._log_metrics(numbers({key: value for key, value in values.items() if key != "step"}), step)

    def finish(self, row: dict, run_dir: Path) -> None:
        self._log_metrics({f"final/{key}": value for key, value in final_metrics(row).items()}, step=0)
        self.client.set_tag(self.run_id, "status", row.get("status", ""))
        self.client.log_artifacts(self.run_id, str(run_dir))

    def close(self, finished: bool) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "FAILED")

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(key), value, now, step) for key, value in values.items()]
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + METRICS_PER_BATCH])


class MlflowSweepRun(Callback):
    """The parent run of a --multirun sweep (registered by conf/logger/mlflow.yaml): started in
    the launching process, named by the sweep dir, ended when the sweep ends."""

    def __init__(self) -> None:
        self.client = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        options = config.logger.mlflow
        try:
            self.client = client(options.tracking_uri)
            experiment = experiment_id(self.client, options.experiment or experiment_name(config.results_csv), options.tracking_uri)
            run = self.client.create_run(experiment, run_name=f"sweep {config.hydra.sweep.dir}",
                                         tags={"sweep_dir": str(Path(config.hydra.sweep.dir).resolve())})
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:  # noqa: BLE001  the jobs log on their own; only the nesting is lost
            print(f"warning: logger=mlflow could not start this sweep's parent run ({type(error).__name__}: {error}); "
                  "its jobs are logged unnested", file=sys.stderr)
            return
        self.run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        os.environ.pop(PARENT_RUN_ENV, None)
        try:
            self.client.set_terminated(self.run_id, "FINISHED")
        except Exception as error:  # noqa: BLE001  the sweep is over; its jobs' runs are what was logged
            print(f"warning: logger=mlflow could not end this sweep's parent run ({type(error).__name__}: {error})", file=sys.stderr)
