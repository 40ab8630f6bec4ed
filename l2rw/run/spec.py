"""A run's specification, built once from its composed config before anything is loaded or
written: the values the run reads and their config_hash, where its row goes and its files are
written, its length and the options `fit` takes. `train`, the benchmarks, the row and the loggers
read it; none resolves the config or the results path again."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from l2rw.errors import UserError
from l2rw.results.run_files import RUN_FILES
from l2rw.results.table import check_results_csv, results_path
from l2rw.run.config_schema import check_values
from l2rw.run.identity import hash_values, read_values, unread_keys
from l2rw.training.loop import FitOptions
from l2rw.training.optimization import run_steps


@dataclass(frozen=True)
class RunSpec:
    cfg: DictConfig              # as composed: what builds the run's parts (`_target_`)
    values: dict = field(repr=False)  # what the run reads, resolved (`l2rw.run.identity.read_values`)
    unread: frozenset[str]       # dotted keys it does not read (`l2rw.run.identity.unread_keys`)
    config_hash: str
    results_csv: Path            # `results_path` of cfg.results_csv
    run_dir: Path

    def fit_options(self, train_size: int) -> FitOptions:
        """What `fit` takes, once the training set's size (which `epochs` count in) is known."""
        return FitOptions.from_config(self.cfg, run_steps(self.cfg, train_size))


# Keys every config.yaml an l2rw run writes holds (conf/config.yaml's), and another tool's hardly all
RUN_CONFIG_KEYS = frozenset({"seed", "dataset", "model", "loss", "method", "steps", "results_csv"})


def validate(cfg: DictConfig, run_dir: str | Path) -> RunSpec:
    """The run's specification, once every option is of its type and range
    (`l2rw.run.config_schema`), results_csv can take the run's row and is not a file the run
    itself writes, and the run dir holds no file of the run's names that no run made: all refused
    before anything is loaded or written."""
    unread = frozenset(unread_keys(cfg))
    values = read_values(cfg, unread)
    check_values(values)
    if not cfg.results_csv:
        raise UserError("results_csv is empty; give the path of a file, e.g. results_csv=outputs/results.csv")
    results_csv, run_dir = results_path(cfg.results_csv), Path(run_dir)
    if results_csv.resolve().parent == run_dir.resolve() and results_csv.name in RUN_FILES:
        raise UserError(f"results_csv={cfg.results_csv} is the run's own {results_csv.name}; choose a path outside "
                        "the run dir, e.g. results_csv=outputs/results.csv")
    check_results_csv(results_csv)
    check_run_dir(run_dir)
    return RunSpec(cfg, values, unread, hash_values(values), results_csv, run_dir)


def check_run_dir(run_dir: Path) -> None:
    """The run writes RUN_FILES into its dir, over any file of those names: refused unless the dir
    is an earlier l2rw run's (a rerun, a resume), so that a file of the user's is never overwritten."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not is_run_config(run_dir / "config.yaml"):
        raise UserError(f"{run_dir / present[0]} is not an l2rw run's file (the dir holds no config.yaml of one), and "
                        "this run would overwrite it; choose another hydra.run.dir (hydra.sweep.dir for --multirun)")


def is_run_config(path: Path) -> bool:
    """Whether `path` is a config.yaml an l2rw run wrote."""
    if not path.is_file():  # a pipe would block the read
        return False
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and RUN_CONFIG_KEYS <= config.keys()
