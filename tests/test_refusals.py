"""Every mistake a user can make on the command line ends in one line on stderr and exit code 2,
before anything is trained or any file of theirs changes: one row per case.

Extend it by adding a row: (arguments, expected exit code, a fragment of the message, files that
must stay as they were). `{tmp}` in an argument is the test's folder, the command's current folder,
which holds USER_FILES (some named as a run's files are). The command runs in this
process (as `l2rw-train` would, Hydra included), so a row costs about a second.

Mistakes that need a setup of their own have their tables beside this one, one file per surface:
test_refusals_folder.py (image folders and their cache), test_refusals_results.py (the results
table, l2rw-select's and l2rw-report's --out, the run's CSVs), test_refusals_checkpoint.py (crafted
checkpoints), test_refusals_tracking.py (MLflow stores, the Optuna sweeper) and
test_refusals_run.py (a full disk, a second signal, the library call's arguments).
"""
import contextlib
import errno
import io
import os
import pathlib

import pytest
import torch
from hydra.errors import ConfigCompositionException

from l2rw.results import report, selection
from l2rw.run import output_dirs, plan
from l2rw.run import train as train_module
from tests.helpers.command_line import l2rw_train

A_FILE = "notes.txt"
NOT_A_TABLE = b"method,lr\nsgd,0.1\n"
# The user's files in `{tmp}`, the current folder of a CASES row: A_FILE, and some named as a run's files are
USER_FILES = [A_FILE, "config.yaml", "metrics.csv", "theirs/metrics.csv", "their_config/config.yaml"]

CASES = [
    (["lr=1e39"], 2, "lr=1e+39 is too large: it must fit a float32", []),
    (["lr=1e308"], 2, "lr=1e+308 is too large", []),
    (["weight_decay=1e39"], 2, "weight_decay=1e+39 must be a finite number >= 0 and <= 1", []),
    (["threads=1099511627776"], 2, "threads=1099511627776 must be a whole number in [1, 4096]", []),
    (["hardware.device=cpu:99"], 2, "hardware.device=cpu:99 names a CPU by number", []),
    (["imbalance='0.9'"], 2, "imbalance='0.9' must be a finite number", []),
    (["method.name=weighted_sampler"], 2, "method.name=weighted_sampler does not name what this run builds", []),
    (["dataset.name=mnist"], 2, "dataset.name=mnist does not name what this run builds", []),
    (["+dataset.bogus=1"], 2, "dataset.bogus is not an option of dataset=digits", []),
    (["loss=focal", "loss.gamma=-1"], 2, "loss.gamma=-1 must be a finite number >= 0", []),
    (["method=mwnet", "method.meta_lr=0"], 2, "method.meta_lr=0 must be a finite number > 0", []),
    (["method=class_balanced", "method.defer=1"], 2, "method.defer=1 must be a finite number >= 0 and < 1", []),
    (["results_csv="], 2, "results_csv is empty", []),
    (["results_csv={tmp}/" + "x" * 300 + ".csv"], 2, "the path is too long", []),
    (["results_csv={tmp}/" + "d/" * 2100 + "x.csv"], 2, "the path is too long", []),
    (["results_csv={tmp}/run/metrics.csv"], 2, "is the run's own metrics.csv", []),
    (["results_csv={tmp}/run/summary.json"], 2, "is the run's own summary.json", []),
    ([f"results_csv={{tmp}}/{A_FILE}"], 2, "is not an l2rw results table", [A_FILE]),
    ([f"hydra.run.dir={{tmp}}/{A_FILE}/run"], 2, f"{A_FILE}/run: cannot make this folder", [A_FILE]),
    ([f"hydra.run.dir={{tmp}}/{A_FILE}"], 2, "cannot make this folder (it exists and is not a folder)", [A_FILE]),
    (["hydra.run.dir=/proc/self/l2rw"], 2, "hydra.run.dir=/proc/self/l2rw: cannot make this folder", []),
    (["hydra.run.dir={tmp}/" + "x" * 300], 2, "cannot make this folder (File name too long)", []),
    (["model=mlp", "model.hidden=[100000000000]"], 2, "model=mlp for 1x8x8 images and 10 classes does not fit in memory", []),
    (["--multirun", f"hydra.sweep.dir={{tmp}}/{A_FILE}/sweep", "seed=0,1"], 2, "hydra.sweep.dir=", [A_FILE]),
    (["dataset=folder", "dataset.root={tmp}"], 2, "has no train/ folder; arrange the images as train/<class>/", [A_FILE]),
    (["dataset=folder", f"dataset.root={{tmp}}/{A_FILE}"], 2, f"{A_FILE} is not a folder; set dataset.root", [A_FILE]),
    (["dataset=folder", "dataset.root={tmp}", f"dataset.manifest={A_FILE}"], 2, f"{A_FILE} lacks the column(s) path, label", [A_FILE]),
    (["dataset=folder", "dataset.root={tmp}", "dataset.group_column=patient"], 2, "dataset.group_column=patient needs a manifest", []),
    (["dataset=folder", "dataset.channels=cmyk"], 2, "dataset.channels=cmyk is unknown; use one of rgb, grey", []),
    # a run or sweep dir that is the current folder, or under a file, or shared by two jobs
    (["hydra.run.dir="], 2, "hydra.run.dir='' is the current folder", USER_FILES),
    (["hydra.run.dir=."], 2, "hydra.run.dir=. is the current folder", USER_FILES),
    (["hydra.run.dir={tmp}"], 2, "is the current folder", USER_FILES),
    (["--multirun", "hydra.sweep.dir=", "seed=0,1"], 2, "hydra.sweep.dir='' is the current folder", USER_FILES),
    (["--multirun", "hydra.sweep.dir={tmp}/sweep", "hydra.sweep.subdir=..", "seed=0,1"], 2,
     "hydra.sweep.subdir=.. is the current folder", USER_FILES),
    (["--multirun", "hydra.sweep.dir={tmp}/sweep", f"hydra.sweep.subdir=../{A_FILE}/job", "seed=0,1"], 2,
     f"hydra.sweep.subdir=../{A_FILE}/job: cannot make this folder", USER_FILES),
    (["--multirun", "hydra.sweep.dir={tmp}/sweep", "hydra.sweep.subdir=same", "seed=0,1"], 2,
     "hydra.sweep.subdir=same gives jobs #0 and #1, which differ, the same dir", USER_FILES),
    # a run dir holding files named as a run's that no run wrote
    (["hydra.run.dir={tmp}/theirs"], 2, "theirs/metrics.csv is not an l2rw run's file", USER_FILES),
    (["hydra.run.dir={tmp}/their_config"], 2, "their_config/config.yaml is not an l2rw run's file", USER_FILES),
    # values that fit float32 but break the maths
    (["method=mwnet", "method.variant=noise", "method.meta_lr=3e38"], 2,
     "method.meta_lr=3e+38 must be a finite number > 0 and <= 1", []),
    (["loss=gce", "loss.q=1e-50"], 2, "loss.q=1e-50 is too small for float32", []),
    (["schedule=multistep", "lr_milestones=[1]", "lr_factors=[1e-50]"], 2, "lr_factors=[1e-50] is too small for float32", []),
    (["loss=logit_adjusted", "loss.tau=3e38"], 2, "loss.tau=3e+38 must be a finite number >= 0 and <= 100", []),
    (["loss=ldam", "loss.scale=3e38"], 2, "loss.scale=3e+38 must be a finite number > 0 and <= 1000", []),
    (["loss=ldam", "loss.max_margin=3e38"], 2, "loss.max_margin=3e+38 must be a finite number > 0 and <= 100", []),
    (["loss=focal", "loss.gamma=3e38"], 2, "loss.gamma=3e+38 must be a finite number >= 0 and <= 100", []),
    (["weight_decay=3e38"], 2, "weight_decay=3e+38 must be a finite number >= 0 and <= 1", []),
    (["posthoc_tau=3e38"], 2, "posthoc_tau=3e+38 must be a finite number >= 0 and <= 100", []),
    # too big to build, and a `_target_` that builds something else
    (["method=mwnet", "method.hidden=100000000000"], 2,
     "method=mwnet does not fit in memory: one of its tensors asked for 400.0 GB; make method.hidden=100000000000", []),
    (["method._target_=builtins.print"], 2, "method._target_=builtins.print does not build a method", []),
    (["dataset.source._target_=os.getcwd"], 2, "dataset.source._target_=os.getcwd does not build a dataset's images", []),
    (["model._target_=l2rw.losses.ce.CrossEntropy"], 2, "model._target_=l2rw.losses.ce.CrossEntropy does not build a model", []),
    (["loss._target_=l2rw.methods.base.Method"], 2, "loss._target_=l2rw.methods.base.Method does not build a loss", []),
]


def write_user_files(folder: pathlib.Path) -> dict[str, bytes]:
    for name in USER_FILES:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(NOT_A_TABLE)
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("args, code, fragment, unchanged", CASES, ids=[" ".join(case[0])[:60] for case in CASES])
def test_a_mistake_is_one_line_and_exit_code_2_before_anything_is_written(tmp_path, monkeypatch, args, code, fragment, unchanged):
    monkeypatch.chdir(tmp_path)
    before = write_user_files(tmp_path)
    results = tmp_path / "results.csv"
    defaults = ["progress=false", "steps=2", f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}"]
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    flags = [arg for arg in args if arg.startswith("--")]  # Hydra's flags come before the overrides
    exit_code, stderr = l2rw_train(*flags, *defaults, *[arg for arg in args if arg not in flags])
    assert exit_code == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], stderr
    assert not results.exists() and not (tmp_path / "run" / "metrics.csv").exists()
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "sweep").exists()
    assert not (tmp_path / ".hydra").exists()  # Hydra's own files never land in the current folder
    for name in unchanged:
        assert (tmp_path / name).read_bytes() == before[name], name
        assert not pathlib.Path(f"{tmp_path / name}.lock").exists()  # nothing left beside a file of the user's


# A command line Hydra cannot compose (l2rw.run.compose_errors), for l2rw-train and l2rw-plan: a row
# each, as above. Refused before Hydra makes the run or sweep dir, so `{tmp}` is left as it was.
OPTIONS_LISTED = "(l2rw-train's options are listed by l2rw-train --cfg job)"
GRAMMAR_HINT = "write key=value, a sweep as key=a,b,c or key=range(0,3)"
COMPOSITION_CASES = [
    (["l2rw-train", "lrr=0.1"], f"error: lrr is not an option; did you mean lr? {OPTIONS_LISTED}"),
    (["l2rw-train", "method.strenght=1"], f"error: method.strenght is not an option of method=sgd; check its spelling {OPTIONS_LISTED}"),
    (["l2rw-train", "logger.tracking_uri=sqlite:///{tmp}/mlflow.db"],
     "error: logger.tracking_uri is not an option of logger=csv; did you mean logger.mlflow.tracking_uri, which logger=mlflow has?"),
    (["l2rw-train", "method.meta_lr=0.1"], "error: method.meta_lr is not an option of method=sgd; method=cmwnet has it"),
    (["l2rw-train", "dataset.val_per_clas=3"], "error: dataset.val_per_clas is not an option of dataset=digits; did you mean dataset.val_per_class?"),
    (["l2rw-train", "hydra.run.dirr={tmp}"], "did you mean hydra.run.dir? (l2rw-train's options are listed by l2rw-train --cfg hydra)"),
    (["l2rw-train", "--cfg", "job", "lrr=0.1"], "error: lrr is not an option; did you mean lr?"),
    (["l2rw-train", "method=l2rww"], "error: method=l2rww: l2rww is not an option of method; did you mean l2rw? "
                                     "(method's options: class_balanced, cmwnet, coteaching, l2rw, mwnet, sgd, weighted_sampler)"),
    (["l2rw-train", "dataset=cifar"], "error: dataset=cifar: cifar is not an option of dataset; did you mean cifar10? "
                                      "(dataset's options: cifar10, cifar100, digits, fashion_mnist, folder, ham10000, mnist)"),
    (["l2rw-train", "+experiment=nope"], "error: +experiment=nope: nope is not an option of experiment; use one of cifar100_lt, "),
    (["l2rw-train", "recipe=ldam_drw"], "error: recipe is an optional group: add it with +recipe=ldam_drw"),
    (["l2rw-train", "+lr=0.1"], "error: lr is an option: set it without +, lr=0.1"),
    (["l2rw-train", "+method=l2rw"], "error: method is a group every run has: set it without +, method=l2rw"),
    (["l2rw-train", "seed=0,1"], "error: seed=0,1 is a sweep: add --multirun to launch one run per value (a list is written seed=[0,1])"),
    (["l2rw-train", "seed=0,,1"], f"error: cannot parse seed=0,,1 (extraneous input ','); {GRAMMAR_HINT}"),
    (["l2rw-train", "seed=0'"], "error: cannot parse seed=0' (unexpected \"'\" at character 7)"),
    (["l2rw-train", "--multirun", "method=sgd,"], "error: cannot parse method=sgd, (mismatched input '<EOF>')"),
    (["l2rw-train", "--multirun", "lrr=0.1,0.2"], "error: lrr is not an option; did you mean lr?"),
    (["l2rw-train", "--multirun", "method=sgd,l2rww"], "error: method=sgd,l2rww: l2rww is not an option of method; did you mean l2rw?"),
    (["l2rw-plan", "lrr=0.1"], f"error: lrr is not an option; did you mean lr? {OPTIONS_LISTED}"),
    (["l2rw-plan", "method=sgd,l2rww"], "error: method=sgd,l2rww: l2rww is not an option of method; did you mean l2rw?"),
]


def l2rw_plan(*args: str) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = plan.main(list(args))
    return code, stderr.getvalue()


@pytest.mark.parametrize("args, fragment", COMPOSITION_CASES, ids=[" ".join(case[0]) for case in COMPOSITION_CASES])
def test_a_command_line_hydra_cannot_compose_is_one_line_and_exit_code_2_before_any_dir_is_made(tmp_path, args, fragment):
    (tmp_path / A_FILE).write_bytes(NOT_A_TABLE)
    tool, *args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if tool == "l2rw-plan":
        exit_code, stderr = l2rw_plan(*args)
    else:
        flags = [arg for arg in args if arg.startswith("--") or arg == "job"]  # Hydra's flags (and --cfg's value) come first
        outputs = [f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        exit_code, stderr = l2rw_train(*flags, "progress=false", "steps=2", *outputs, *[arg for arg in args if arg not in flags])
    assert exit_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], stderr
    assert [path.name for path in tmp_path.iterdir()] == [A_FILE]


def test_a_composition_error_not_recognised_is_hydras_own_report(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    exit_code, stderr = l2rw_train("~lrr", f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_code == 1 and "Could not delete from config. 'lrr' does not exist." in stderr


def test_with_hydra_full_error_a_mistake_is_still_one_line_and_anything_else_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert l2rw_train("lrr=0.1", f"hydra.run.dir={tmp_path / 'run'}") == (2, f"error: lrr is not an option; did you mean lr? {OPTIONS_LISTED}\n")
    with pytest.raises(ConfigCompositionException, match="Could not delete from config"):
        l2rw_train("~lrr", f"hydra.run.dir={tmp_path / 'run'}")
    assert list(tmp_path.iterdir()) == []


# The table readers, l2rw-report and l2rw-select, given something that is no results table: a row
# each, as above. `{tmp}` holds A_FILE, a folder and a named pipe (never opened: it would block).
READERS = {"l2rw-report": report.main, "l2rw-select": selection.main}
NOT_A_REGULAR_FILE = "is not a regular file (a directory, device or pipe)"
READER_CASES = [
    (["l2rw-report", "{tmp}/folder"], 2, NOT_A_REGULAR_FILE),
    (["l2rw-report", "/dev/null"], 2, NOT_A_REGULAR_FILE),
    (["l2rw-report", "{tmp}/pipe"], 2, NOT_A_REGULAR_FILE),
    (["l2rw-select", "{tmp}/pipe"], 2, NOT_A_REGULAR_FILE),
    (["l2rw-report", "{tmp}/missing.csv"], 2, "does not exist"),
    (["l2rw-select", f"{{tmp}}/{A_FILE}"], 2, "lacks the column(s)"),
]


@pytest.mark.parametrize("args, code, fragment", READER_CASES, ids=[" ".join(case[0]) for case in READER_CASES])
def test_a_reader_given_no_results_table_says_what_it_is_in_one_line(tmp_path, capsys, args, code, fragment):
    (tmp_path / A_FILE).write_bytes(NOT_A_TABLE)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    tool, *arguments = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    with pytest.raises(SystemExit) as exit_:
        READERS[tool](arguments)
    out, err = capsys.readouterr()
    assert exit_.value.code == code and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder", A_FILE, "pipe"]
    assert (tmp_path / A_FILE).read_bytes() == NOT_A_TABLE


def test_results_csv_under_home_is_written_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    exit_code, stderr = l2rw_train("progress=false", "steps=2", "results_csv='~/results.csv'",
                                   f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_code == 0, stderr
    assert (tmp_path / "results.csv").is_file() and not (tmp_path / ".." / "~").exists()


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES], ids=["read-only", "full", "no-permission"])
def test_a_run_dir_the_file_system_refuses_is_one_line(tmp_path, monkeypatch, code):
    """File systems a test cannot make (read-only to root, full): their mkdir's error."""
    make_dir = pathlib.Path.mkdir

    def refused(path, *args, **kwargs):
        if path.is_relative_to(tmp_path):
            raise OSError(code, os.strerror(code), str(path))
        make_dir(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refused)
    run_dir = tmp_path / "run"
    exit_code, stderr = l2rw_train("progress=false", f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={run_dir}")
    assert exit_code == 2
    assert stderr == f"error: hydra.run.dir={run_dir}: cannot make this folder ({os.strerror(code)}); choose another path\n"


def test_running_out_of_memory_while_training_is_one_line_naming_what_to_shrink(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)\nmore detail")

    monkeypatch.setattr(train_module, "fit", out_of_memory)
    results = tmp_path / "results.csv"
    exit_code, stderr = l2rw_train("progress=false", f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_code == 2 and not results.exists()
    assert stderr == ("error: out of memory on hardware.device=cpu (CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                      "1.00 GiB free)); lower batch_size or method.meta_batch_size, choose a smaller model or "
                      "dataset.image_size, or try hardware.amp=bf16\n")


def test_ctrl_c_while_hydra_starts_is_one_line_and_the_shells_code(tmp_path, monkeypatch):
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(output_dirs, "creatable", interrupted)  # called from Hydra's start-up, before any job
    exit_code, stderr = l2rw_train("progress=false", f"results_csv={tmp_path / 'results.csv'}",
                                   f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_code == 130 and stderr == "interrupted before any run started; nothing was written\n"
    assert list(tmp_path.iterdir()) == []
