"""Loggers a run reports to besides its CSV files (`logger=` config group): TensorBoard, MLflow.

    l2rw-train logger=tensorboard
    l2rw-train --multirun logger=[tensorboard,mlflow] method=sgd,l2rw seed=0,1,2

`RunLoggers.from_config` builds every chosen logger after the config is validated: a missing
optional package stops the run there, in one line, before anything is trained. During the run a
logger that raises is warned about once and dropped: the CSV files and the results row are the
record, so a full disk or a locked database never costs a run.
"""
from l2rw.tracking.loggers import RunLogger, RunLoggers

__all__ = ["RunLogger", "RunLoggers"]
