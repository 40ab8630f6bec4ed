"""The results table and the readers' outputs never take a file of the user's for one of theirs:
what they refuse is one line and exit code 2, and every file there stays as it was.

A row each, as in test_refusals.py: `{tmp}` in an argument is the test's folder. A call that
could block on a named pipe runs in a thread that must finish in time (a blocked one is released).
"""
import contextlib
import csv
import io
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2rw.errors import UserError
from l2rw.file_io import WRITTEN, atomic_path, remove_killed_temporaries
from l2rw.results import report, selection
from l2rw.results.run_files import write_run_files
from l2rw.results.table import append_row, check_results_csv
from l2rw.training.evaluation import Evaluation
from tests.helpers.command_line import l2rw_train

RESULTS_NOTES = b"my notes: lr 0.1 was best\n"
RESULTS_HEADER = "run_id,config_hash,status,method,lr,seed,accuracy,balanced_accuracy,val_balanced_accuracy\n"
RESULTS_TABLE = RESULTS_HEADER + "".join(
    f"r{i},h{lr},ok,sgd,{lr},{seed},0.{5 + i},0.{5 + i},0.{6 + i}\n"
    for i, (lr, seed) in enumerate([("0.1", 0), ("0.1", 1), ("0.3", 0)])
)
A_MALFORMED_RECORD = "r9,h9,ok,sgd\n"  # too few fields: set aside on the next append
NO_PROCESS = 4194304  # above the highest pid Linux gives (2**22)


# Files beside a table that are named like temporaries: only one atomic_path left behind when its
# process was killed is removed; (name beside `results.csv`, whether the next append removes it).
TEMPORARY_CASES = [
    ("results.csv.2024.tmp", False),  # the user's
    ("results.csv.12.tmp", False),
    (f"results.csv.l2rw-{os.getppid()}.tmp", False),  # a live writer's
    ("results.csv.l2rw-12x.tmp", False),
    (f"other.csv.l2rw-{NO_PROCESS}.tmp", False),  # another file's
    (f"results.csv.l2rw-{NO_PROCESS}.tmp", True),  # a killed writer's
]


@pytest.mark.parametrize("name, removed", TEMPORARY_CASES, ids=[case[0] for case in TEMPORARY_CASES])
def test_only_the_temporary_of_a_killed_writer_is_removed_beside_the_table(tmp_path, name, removed):
    beside = tmp_path / name
    beside.write_bytes(RESULTS_NOTES)
    append_row(tmp_path / "results.csv", {"run_id": "a", "config_hash": "h", "status": "ok"})
    assert beside.exists() != removed


def test_atomic_path_names_its_temporary_so_that_a_killed_writers_is_removed(tmp_path):
    target = tmp_path / "images.pt"  # any file atomic_path writes, the image cache's say
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        left_behind = temporary.with_name(temporary.name.replace(str(os.getpid()), str(NO_PROCESS)))
        left_behind.write_bytes(b"half")  # as a killed process would leave it
        remove_killed_temporaries(target)
        assert temporary.exists() and not left_behind.exists()  # this live writer's stays
    assert target.read_bytes() == b"half" and sorted(p.name for p in tmp_path.iterdir()) == ["images.pt"]


# results_csv values that pathlib cannot even look at, or whose table a rewrite would damage: a row
# each, run as `l2rw-train` with `results_csv` and any file beside it set up as SETUPS makes them.
def loop(tmp: Path) -> None:
    (tmp / "loop.csv").symlink_to(tmp / "loop.csv")


def repeated_column(tmp: Path) -> None:
    (tmp / "repeated.csv").write_text(RESULTS_HEADER.replace(",seed,", ",lr,") + "r0,h0,ok,sgd,0.1,0.3,0.5,0.5,0.6\n")


def linked_side_file(tmp: Path) -> None:
    (tmp / "linked.csv").write_text(RESULTS_TABLE + A_MALFORMED_RECORD)
    (tmp / "notes.txt").write_bytes(RESULTS_NOTES)
    (tmp / "linked.csv.malformed").symlink_to(tmp / "notes.txt")


RESULTS_CSV_CASES = [
    (["results_csv={tmp}/loop.csv"], loop, "results_csv={tmp}/loop.csv is a symlink loop; remove it"),
    (["results_csv={tmp}/repeated.csv"], repeated_column, "names the column 'lr' more than once (an edit?); rename or remove one"),
    (["results_csv={tmp}/linked.csv"], linked_side_file, "linked.csv.malformed, where malformed records of the table are kept, "
                                                         "is not a regular file (a symlink, directory, device or pipe); move it away"),
    (["results_csv='~no-such-user-of-l2rw/results.csv'"], None, "cannot expand its ~ (no such user); give the folder in full"),
]


@pytest.mark.parametrize("args, setup, fragment", RESULTS_CSV_CASES, ids=[case[0][0] for case in RESULTS_CSV_CASES])
def test_a_results_csv_that_cannot_be_used_safely_is_one_line_before_training(tmp_path, args, setup, fragment):
    if setup:
        setup(tmp_path)
    before = files_in(tmp_path)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    exit_code, stderr = l2rw_train("progress=false", "steps=2", f"hydra.run.dir={tmp_path / 'run'}", *args)
    assert exit_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.replace("{tmp}", str(tmp_path)) in lines[0], stderr
    assert files_in(tmp_path) == before and not (tmp_path / "run" / "metrics.csv").exists()


def test_a_repeated_column_is_refused_before_a_rewrite_could_drop_one_of_its_values(tmp_path):
    repeated_column(tmp_path)
    path, before = tmp_path / "repeated.csv", (tmp_path / "repeated.csv").read_bytes()
    with pytest.raises(UserError, match=f"^results_csv={path}: its header names the column 'lr' more than once"):
        append_row(path, {"run_id": "a", "config_hash": "h", "status": "ok", "new_column": 1})  # would rewrite
    assert path.read_bytes() == before and not (tmp_path / "repeated.csv.malformed").exists()


def test_malformed_records_are_never_appended_through_a_symlinked_side_file(tmp_path):
    linked_side_file(tmp_path)
    path = tmp_path / "linked.csv"
    with pytest.raises(UserError, match="linked.csv.malformed, where malformed records .* is not a regular file"):
        append_row(path, {"run_id": "a", "config_hash": "h", "status": "ok"})
    assert (tmp_path / "notes.txt").read_bytes() == RESULTS_NOTES
    assert path.read_text() == RESULTS_TABLE + A_MALFORMED_RECORD


# The readers' outputs: only a file the tool wrote there, unchanged since, is replaced (or removed,
# for a report's plot it has nothing to draw for). A row each: (tool, its --out, how the files at
# --out came to be, a fragment of the one line, the files the refusal must leave as they were).
def results_csv(tmp: Path) -> Path:
    path = tmp / "results.csv"
    path.write_text(RESULTS_TABLE)
    return path


def run_reader(tool: str, *arguments: str) -> tuple[int, str]:
    """`tool ARGUMENTS` in this process: its exit code and stderr (stdout is checked empty on errors)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            READERS[tool](list(arguments))
        except SystemExit as exit_:
            assert out.getvalue() == "", err.getvalue()
            return exit_.code, err.getvalue()
    return 0, err.getvalue()


READERS = {"l2rw-select": selection.main, "l2rw-report": report.main}


def written_then_edited(tmp: Path, tool: str, out: Path, name: str) -> None:
    assert run_reader(tool, str(results_csv(tmp)), "--out", str(out))[0] == 0
    edited = out / name if out.is_dir() else out
    edited.write_bytes(edited.read_bytes() + b"a note of the user's\n")  # its header as it was


def copied_from_what_it_wrote(tmp: Path, tool: str, out: Path, name: str) -> None:
    written = tmp / "written.csv"
    assert run_reader(tool, str(results_csv(tmp)), "--out", str(written))[0] == 0
    out.write_bytes(written.read_bytes())  # the selection table's header: no longer a sign it is the tool's


def users_file(tmp: Path, tool: str, out: Path, name: str) -> None:
    results_csv(tmp)
    out.mkdir(exist_ok=True)
    (out / name).write_bytes(RESULTS_NOTES)


def nothing_there(tmp: Path, tool: str, out: Path, name: str) -> None:
    results_csv(tmp)


NOT_WRITTEN_BY_SELECT = "exists and is not a table l2rw-select wrote (or was changed since); choose another path, or delete it"
NOT_WRITTEN_BY_REPORT = "exists and is not a file l2rw-report wrote (or was changed since); choose another path, or delete it"
OUT_CASES = [
    ("l2rw-select", "chosen.csv", None, written_then_edited, f"--out {{tmp}}/chosen.csv {NOT_WRITTEN_BY_SELECT}"),
    ("l2rw-select", "chosen.csv", None, copied_from_what_it_wrote, f"--out {{tmp}}/chosen.csv {NOT_WRITTEN_BY_SELECT}"),
    ("l2rw-select", WRITTEN, None, nothing_there,
     f"--out {{tmp}}/{WRITTEN}: {WRITTEN} is where this tool records the files it wrote; choose another name"),
    ("l2rw-report", "report", "report.md", written_then_edited, f"--out {{tmp}}/report: report.md {NOT_WRITTEN_BY_REPORT}"),
    ("l2rw-report", "report", "report.md", users_file, f"--out {{tmp}}/report: report.md {NOT_WRITTEN_BY_REPORT}"),
    # a plot with nothing to draw is removed: never a user's file of that name
    ("l2rw-report", "report", "balanced_accuracy_vs_imbalance.png", users_file,
     f"--out {{tmp}}/report: balanced_accuracy_vs_imbalance.png {NOT_WRITTEN_BY_REPORT}"),
]


@pytest.mark.parametrize("tool, out, name, prepare, fragment", OUT_CASES,
                         ids=[f"{case[0]} {case[2] or case[1]} {case[3].__name__}" for case in OUT_CASES])
def test_a_reader_replaces_only_what_it_wrote_there_unchanged(tmp_path, tool, out, name, prepare, fragment):
    out = tmp_path / out
    prepare(tmp_path, tool, out, name)
    before = files_in(tmp_path)
    exit_code, stderr = run_reader(tool, str(tmp_path / "results.csv"), "--out", str(out))
    assert exit_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {fragment.replace('{tmp}', str(tmp_path))}", stderr
    assert files_in(tmp_path) == before


def test_a_reader_replaces_what_it_wrote_there(tmp_path):
    results, out = results_csv(tmp_path), tmp_path / "report"
    for tool, target in [("l2rw-select", tmp_path / "chosen.csv"), ("l2rw-report", out)]:
        assert run_reader(tool, str(results), "--out", str(target))[0] == 0
        assert run_reader(tool, str(results), "--out", str(target))[0] == 0  # a rerun replaces its own files
    assert (out / "report.md").read_text().startswith(f"# l2rw report: {results}")
    assert pd.read_csv(tmp_path / "chosen.csv").lr.tolist() == [0.3]


# Named pipes where a tool writes or reads a file: refused before anything opens them (an open
# would wait for the other end forever). (what makes the call, the pipe's name in {tmp}, fragment.)
def select_out(tmp: Path) -> None:
    selection.main([str(results_csv(tmp)), "--out", str(tmp / "pipe")])


def report_out(tmp: Path) -> None:
    report.main([str(results_csv(tmp)), "--out", str(tmp)])


def append_to(name: str):
    def append(tmp: Path) -> None:
        (tmp / "table.csv").write_text(RESULTS_TABLE + A_MALFORMED_RECORD)
        append_row(tmp / name, {"run_id": "a", "config_hash": "h", "status": "ok"})
    return append


def check(tmp: Path) -> None:
    check_results_csv(tmp / "table.csv")


FIFO_CASES = [
    (select_out, "pipe", "--out {tmp}/pipe is not a regular file (a directory, device, pipe or symlink)"),
    (report_out, "report.md", "--out {tmp}: report.md is not a regular file"),
    (report_out, "learning_curves.png", "--out {tmp}: learning_curves.png is not a regular file"),
    (append_to("pipe.csv"), "pipe.csv", "results_csv={tmp}/pipe.csv is not a regular file"),
    (append_to("table.csv"), "table.csv.malformed", "table.csv.malformed, where malformed records of the table are kept, is not a regular file"),
    (check, "table.csv.malformed", "table.csv.malformed, where malformed records of the table are kept, is not a regular file"),
]


@pytest.mark.parametrize("call, pipe, fragment", FIFO_CASES, ids=[f"{case[0].__name__} {case[1]}" for case in FIFO_CASES])
def test_a_named_pipe_is_refused_without_opening_it(tmp_path, capsys, call, pipe, fragment):
    os.mkfifo(tmp_path / pipe)
    outcome = {}

    def refused() -> None:
        try:
            call(tmp_path)
        except SystemExit as exit_:
            outcome["code"] = exit_.code
        except UserError as error:
            outcome["code"], outcome["message"] = 2, f"error: {error}"

    thread = threading.Thread(target=refused, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # blocked in open: opening both ends of the pipe releases it
        os.close(os.open(tmp_path / pipe, os.O_RDWR | os.O_NONBLOCK))
        thread.join(timeout=5)
        pytest.fail(f"{call.__name__} opened the pipe {pipe} and waited on it")
    message = outcome.get("message") or capsys.readouterr().err.strip()
    assert outcome.get("code") == 2 and len(message.splitlines()) == 1, message
    assert fragment.replace("{tmp}", str(tmp_path)) in message
    assert os.path.exists(tmp_path / pipe)


# Class names are folder names: a comma, a quote or a line break in one is quoted in the run's CSVs.
AWKWARD_CLASS_NAMES = ["plain", "with, comma", 'with "quotes"', "with\nline break"]


def test_class_names_with_commas_quotes_or_line_breaks_keep_the_run_csvs_aligned(tmp_path):
    confusion = torch.tensor([[5, 1, 0, 0], [0, 4, 2, 0], [1, 0, 3, 0], [0, 0, 0, 7]])
    recall = (confusion.diag() / confusion.sum(1)).tolist()
    evaluation = Evaluation(accuracy=0.7, balanced_accuracy=sum(recall) / 4, per_class_recall=recall, confusion=confusion)
    row = {"dataset": "folder", "model": "mlp", "method": "sgd"}
    write_run_files(tmp_path, row, evaluation, AWKWARD_CLASS_NAMES)

    recall_table = pd.read_csv(tmp_path / "per_class_recall.csv")
    assert recall_table["class"].tolist() == AWKWARD_CLASS_NAMES
    assert recall_table.support.tolist() == confusion.sum(1).tolist()
    assert recall_table.recall.tolist() == pytest.approx(recall, abs=1e-6)
    with open(tmp_path / "confusion.csv", newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    assert header == ["true\\predicted", *AWKWARD_CLASS_NAMES]
    assert [row[0] for row in rows] == AWKWARD_CLASS_NAMES
    assert [[int(count) for count in row[1:]] for row in rows] == confusion.tolist()


def files_in(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder` but the run dir (which Hydra makes): a file's bytes, a link's
    target, a pipe as such."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_relative_to(folder / "run"):
            continue
        if path.is_symlink():
            entries[str(path)] = f"-> {os.readlink(path)}"
        elif path.is_file():
            entries[str(path)] = path.read_bytes()
        else:
            entries[str(path)] = "folder" if path.is_dir() else "other"
    return entries
