"""The tuning sweep (hydra/sweeper=optuna) and logger=mlflow given an option, a search space or a
store they cannot use: one line on stderr, exit code 2, before a trial trains or a store is
written, every file of the user's as it was: one row per case, as in test_refusals.py.

`{tmp}` in an argument is the test's folder, which holds a text file, a results table, an SQLite
database of the user's, and (for the rows naming it) an Optuna study's database.
"""
import sqlite3
from pathlib import Path

import pytest

from l2rw.errors import UserError
from l2rw.tracking.stores import prepare_database
from tests.helpers.command_line import l2rw_train

TRACKING_TEXT_FILE = "notes.txt"
TRACKING_RESULTS_TABLE = "table.csv"   # a results table: the identity columns, no row yet
TRACKING_USER_DATABASE = "user.db"     # an SQLite database of the user's, one table of theirs
TRACKING_STUDY_DATABASE = "study.db"   # an Optuna study's database, made for the rows that name it
TRACKING_SWEEP = ["--multirun", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "dataset.val_per_class=2"]
TRACKING_LR = "lr=interval(0.01,0.1)"

SWEEPER_CASES = [
    ([*TRACKING_SWEEP, "hydra.sweeper.n_trials=abc", TRACKING_LR], "hydra.sweeper.n_trials=abc must be a whole number >= 1"),
    ([*TRACKING_SWEEP, "hydra.sweeper.n_trials=1.5", TRACKING_LR], "hydra.sweeper.n_trials=1.5 must be a whole number >= 1"),
    ([*TRACKING_SWEEP, "hydra.sweeper.seed=-1", TRACKING_LR], "hydra.sweeper.seed=-1 must be a whole number in [0, 4294967295]"),
    ([*TRACKING_SWEEP, "hydra.sweeper.seed=abc", TRACKING_LR], "hydra.sweeper.seed=abc must be a whole number in [0, 4294967295]"),
    ([*TRACKING_SWEEP, "hydra.sweeper.n_jobs=abc", TRACKING_LR], "hydra.sweeper.n_jobs=abc must be a whole number"),
    ([*TRACKING_SWEEP, "hydra.sweeper.metric=val_bogus", TRACKING_LR], "hydra.sweeper.metric=val_bogus is not a validation column"),
    ([*TRACKING_SWEEP, "dataset.val_per_class=0", TRACKING_LR], "the trials' rows would have none, as they have no validation split"),
    ([*TRACKING_SWEEP, "lr=tag(log,interval(1,0.01))"], "lr=tag(log,interval(1,0.01)) is not a space Optuna can sample (`low <= high`"),
    ([*TRACKING_SWEEP, "lr=tag(log,interval(0,1))"], "lr=tag(log,interval(0,1)) is not a space Optuna can sample (`low > 0` must hold"),
    ([*TRACKING_SWEEP, "seed=range(0,0)"], "seed=range(0,0) is not a space Optuna can sample (The `choices` must contain"),
    ([*TRACKING_SWEEP, f"results_csv={{tmp}}/{TRACKING_TEXT_FILE}/results.csv", TRACKING_LR], "cannot create its folder"),
    ([*TRACKING_SWEEP, f"hydra.sweeper.storage=sqlite:///{{tmp}}/{TRACKING_TEXT_FILE}", TRACKING_LR], "notes.txt is not an SQLite database"),
    ([*TRACKING_SWEEP, f"hydra.sweeper.storage=sqlite:///{{tmp}}/{TRACKING_USER_DATABASE}", TRACKING_LR],
     "user.db holds tables that are not Optuna's (measurements); Optuna would add its own to it"),
    ([*TRACKING_SWEEP, f"results_csv={{tmp}}/{TRACKING_RESULTS_TABLE}", f"hydra.sweeper.storage=sqlite:///{{tmp}}/{TRACKING_RESULTS_TABLE}",
      TRACKING_LR], "table.csv is results_csv; give the study a file of its own"),
    ([*TRACKING_SWEEP, "hydra.sweeper.storage=sqlite:///{tmp}/results.csv", TRACKING_LR],
     "results.csv is results_csv; give the study a file of its own"),
    ([*TRACKING_SWEEP, "hydra.sweeper.storage=sqlite:///{tmp}", TRACKING_LR], "is not a regular file (a directory, device or pipe)"),
    ([*TRACKING_SWEEP, "hydra.sweeper.storage=sqlite:////proc/l2rw/optuna.db", TRACKING_LR], "cannot create /proc/l2rw/optuna.db"),
    ([*TRACKING_SWEEP, "hydra.sweeper.storage=bogus://", TRACKING_LR], "hydra.sweeper.storage=bogus://: SQLAlchemy knows no database of this kind"),
    ([*TRACKING_SWEEP, "hydra.sweeper.storage=mysql+mysqldb://user@localhost/db", TRACKING_LR], "its database driver is not installed"),
    ([*TRACKING_SWEEP, "logger=mlflow", "logger.mlflow.tracking_uri=bogus://", TRACKING_LR],
     "logger.mlflow.tracking_uri=bogus://: MLflow cannot log there"),
]

MLFLOW_CASES = [
    (["logger.mlflow.tracking_uri="], "logger.mlflow.tracking_uri is empty"),
    (["logger.mlflow.tracking_uri=bogus://"], "logger.mlflow.tracking_uri=bogus://: MLflow cannot log there"),
    (["logger.mlflow.tracking_uri=file://"], "logger.mlflow.tracking_uri=file:// names no folder"),
    ([f"results_csv={{tmp}}/{TRACKING_RESULTS_TABLE}", f"logger.mlflow.tracking_uri={{tmp}}/{TRACKING_RESULTS_TABLE}"],
     "table.csv is not a folder, which MLflow's file store is"),
    ([f"logger.mlflow.tracking_uri=file://{{tmp}}/{TRACKING_TEXT_FILE}"], "notes.txt is not a folder, which MLflow's file store is"),
    ([f"results_csv={{tmp}}/{TRACKING_RESULTS_TABLE}", f"logger.mlflow.tracking_uri=sqlite:///{{tmp}}/{TRACKING_RESULTS_TABLE}"],
     "table.csv is not an SQLite database"),
    ([f"logger.mlflow.tracking_uri=sqlite:///{{tmp}}/{TRACKING_TEXT_FILE}"], "notes.txt is not an SQLite database"),
    ([f"logger.mlflow.tracking_uri=sqlite:///{{tmp}}/{TRACKING_TEXT_FILE}/mlflow.db"], "(a folder of its path is a file)"),
    (["logger.mlflow.tracking_uri=sqlite:///{tmp}"], "is not a regular file (a directory, device or pipe)"),
    (["logger.mlflow.tracking_uri=sqlite:////proc/mlflow.db"], "cannot create /proc/mlflow.db"),
    (["logger.mlflow.tracking_uri=sqlite://"], "names no database file"),
    (["logger.mlflow.tracking_uri=mysql+mysqldb://user@localhost/db"], "its database driver is not installed"),
    ([f"logger.mlflow.tracking_uri=sqlite:///{{tmp}}/{TRACKING_USER_DATABASE}"],
     "user.db holds tables that are not MLflow's (measurements); MLflow would add its own to it"),
    ([f"logger.mlflow.tracking_uri=sqlite:///{{tmp}}/{TRACKING_STUDY_DATABASE}"],
     "study.db holds tables that are not MLflow's (studies, study_directions, study_system_attributes"),
]


def tracking_files(tmp_path: Path, args: list[str]) -> dict[Path, bytes]:
    """The files of the user's the rows point at, by path: their bytes, to compare after the command."""
    (tmp_path / TRACKING_TEXT_FILE).write_bytes(b"method,lr\nsgd,0.1\n")
    (tmp_path / TRACKING_RESULTS_TABLE).write_bytes(b"run_id,config_hash,status\n")
    with sqlite3.connect(tmp_path / TRACKING_USER_DATABASE) as database:
        database.execute("CREATE TABLE measurements (value REAL)")
    database.close()
    if any(TRACKING_STUDY_DATABASE in arg for arg in args):
        tracking_study(tmp_path / TRACKING_STUDY_DATABASE, "search", "maximize")
    return {path: path.read_bytes() for path in tmp_path.iterdir()}


def tracking_study(database: Path, name: str, direction: str, **params):
    """An Optuna study with one finished trial of `params` (name: (value, distribution))."""
    optuna = pytest.importorskip("optuna")
    made = optuna.create_study(storage=f"sqlite:///{database}", study_name=name, direction=direction)
    if params:
        made.add_trial(optuna.trial.create_trial(params={key: value for key, (value, _) in params.items()},
                                                 distributions={key: space for key, (_, space) in params.items()}, value=0.5))
    return made


def tracking_refusal(tmp_path: Path, args: list[str], fragment: str) -> None:
    """`l2rw-train ARGS` ends in one line holding `fragment`, exit code 2, and leaves the user's
    files, and every store and output, as they were."""
    before = tracking_files(tmp_path, args)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    flags = [arg for arg in args if arg.startswith("--")]  # Hydra's flags come before the overrides
    outputs = ["progress=false", "steps=2", f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    exit_code, stderr = l2rw_train(*flags, *outputs, *[arg for arg in args if arg not in flags])
    assert exit_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], stderr
    assert {path: path.read_bytes() for path in before} == before
    made = {path.name for path in tmp_path.iterdir() if path not in before and not path.name.endswith(".csv.lock")}
    assert made <= {"run"}, made  # Hydra's run dir (and the results table's lock): no store, row or trial
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.slow  # l2rw-train --multirun with the Optuna sweeper, a row each
@pytest.mark.parametrize("args, fragment", SWEEPER_CASES, ids=[" ".join(case[0][len(TRACKING_SWEEP):])[:70] for case in SWEEPER_CASES])
def test_a_tuning_sweep_refuses_what_it_cannot_use_in_one_line_before_the_first_trial(tmp_path, args, fragment):
    pytest.importorskip("optuna")
    if "logger=mlflow" in args:
        pytest.importorskip("mlflow")
    tracking_refusal(tmp_path, args, fragment)


@pytest.mark.slow  # l2rw-train with MLflow imported, a row each
@pytest.mark.parametrize("args, fragment", MLFLOW_CASES, ids=[" ".join(case[0])[:70] for case in MLFLOW_CASES])
def test_a_tracking_uri_mlflow_cannot_use_is_one_line_before_anything_is_written(tmp_path, args, fragment):
    pytest.importorskip("mlflow")
    tracking_refusal(tmp_path, ["logger=mlflow", *args], fragment)


def test_a_study_resumed_with_the_other_direction_is_refused(tmp_path):
    tracking_study(tmp_path / "optuna.db", "search", "maximize")
    tracking_refusal(tmp_path, [*TRACKING_SWEEP, "hydra.sweeper.study_name=search", "hydra.sweeper.direction=minimize", TRACKING_LR],
            "optuna.db is to maximize its metric; rerun with hydra.sweeper.direction=maximize, or name a new study")


def test_a_named_study_resumed_with_another_space_is_refused(tmp_path):
    optuna = pytest.importorskip("optuna")
    tracking_study(tmp_path / "optuna.db", "search", "maximize", lr=(0.05, optuna.distributions.FloatDistribution(0.01, 0.1)))
    tracking_refusal(tmp_path, [*TRACKING_SWEEP, "hydra.sweeper.study_name=search", "lr=tag(log,interval(0.01,0.1))"],
            "lr: study 'search' in sqlite:///")


def test_a_storage_optuna_cannot_open_is_one_line(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from sqlalchemy.exc import OperationalError

    def no_answer(**options):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused\nis the server running?"))

    monkeypatch.setattr(optuna, "create_study", no_answer)  # as a database server that does not answer
    exit_code, stderr = l2rw_train(*TRACKING_SWEEP, f"results_csv={tmp_path / 'results.csv'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", TRACKING_LR)
    assert exit_code == 2 and stderr.startswith("error: hydra.sweeper.storage=sqlite:///") and stderr.count("\n") == 1, stderr
    assert "Optuna cannot open it ((builtins.ConnectionRefusedError) connection refused); check the URL" in stderr
    assert not (tmp_path / "sweep").exists()


def test_a_store_takes_a_new_path_an_empty_file_or_a_database_of_its_own(tmp_path):
    prepare_database("key", f"sqlite:///{tmp_path / 'new' / 'store.db'}", "Store", {"runs"})
    assert (tmp_path / "new" / "store.db").read_bytes() == b""  # made, empty, for the store to fill
    (tmp_path / "empty.db").touch()
    prepare_database("key", f"sqlite:///{tmp_path / 'empty.db'}", "Store", {"runs"})
    with sqlite3.connect(tmp_path / "own.db") as database:
        database.execute("CREATE TABLE runs (id INTEGER)")
        database.execute("CREATE TABLE alembic_version (version_num TEXT)")
    database.close()
    prepare_database("key", f"sqlite:///{tmp_path / 'own.db'}", "Store", {"runs"})
    with pytest.raises(UserError, match=r"own.db holds tables that are not Other's \(runs\)"):
        prepare_database("key", f"sqlite:///{tmp_path / 'own.db'}", "Other", {"studies"})
