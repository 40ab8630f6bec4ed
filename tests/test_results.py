"""l2rw.results.table: the results CSV keeps one text form per value, whichever append path wrote the row,
and is never damaged: other files are refused untouched, damaged records are set aside, not lost,
every read and write holds the table's lock, and concurrent writers neither interleave nor lose rows."""
import errno
import multiprocessing
import os
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock, Timeout

from l2rw.errors import UserError
from l2rw.results import table as results
from l2rw.results.table import append_row, check_results_csv, finished_row

HEADER = "run_id,config_hash,status,accuracy\n"


def row(run_id: str, config_hash: str = "h", **columns) -> dict:
    return {"run_id": run_id, "config_hash": config_hash, "status": "ok", **columns}


def test_a_number_column_new_to_the_file_is_written_as_the_plain_appends_write_it(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, row("a", method="sgd", lr=0.1))
    append_row(path, row("b", method="l2rw", lr=0.1, **{"method.meta_batch_size": 100}))  # rewrites the file
    append_row(path, row("c", method="l2rw", lr=0.1, **{"method.meta_batch_size": 100}))  # plain append
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert table["method.meta_batch_size"].tolist() == ["", "100", "100"]
    assert table.lr.tolist() == ["0.1", "0.1", "0.1"]


def test_rows_of_methods_with_fewer_columns_append_and_none_is_always_an_empty_field(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, row("a", method="l2rw", **{"hardware.amp": None, "method.impl": "fwd"}))
    append_row(path, row("b", method="sgd", **{"hardware.amp": None}))  # columns the file has: appended
    append_row(path, row("c", method="sgd", noise_rate=0.2, **{"hardware.amp": None}))  # a new column: rewritten
    append_row(path, row("d", method="sgd", **{"hardware.amp": None}))
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["run_id", "config_hash", "status", "method", "hardware.amp", "method.impl", "noise_rate"]
    assert table["hardware.amp"].tolist() == ["", "", "", ""]  # one group in the report, not "" and "None"
    assert table["method.impl"].tolist() == ["fwd", "", "", ""]
    assert table.noise_rate.tolist() == ["", "", "0.2", ""]


@pytest.mark.parametrize("content", [
    b"my notes about the runs\nlr 0.1 was best\n",
    b"method,lr,accuracy\nsgd,0.1,0.9\n",  # a CSV, but not one of l2rw's tables
    bytes(range(256)) * 4,  # binary
    b"run_id,config_hash,status" + b"x" * (1 << 17),  # a first line longer than any header, read no further
    b"\n",
])
def test_a_file_that_is_not_a_results_table_is_refused_and_left_byte_for_byte(tmp_path, content):
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    for use in (check_results_csv, lambda p: append_row(p, row("a")), lambda p: finished_row(p, "h")):
        with pytest.raises(UserError, match=f"results_csv={path} is not an l2rw results table .*move that file away"):
            use(path)
    assert path.read_bytes() == content
    assert not (tmp_path / "results.csv.malformed").exists()
    assert not (tmp_path / "results.csv.lock").exists()  # nothing of ours is left beside the user's file


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full", "/dev/zero"])
def test_a_device_is_refused_without_reading_it(device):
    for use in (check_results_csv, lambda p: append_row(p, row("a")), lambda p: finished_row(p, "h")):
        with pytest.raises(UserError, match=f"results_csv={device} is not a regular file"):
            use(Path(device))
    assert not Path(f"{device}.lock").exists()


def test_a_lock_path_that_is_a_directory_is_named_with_its_fix(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER)
    (tmp_path / "results.csv.lock").mkdir()
    for use in (check_results_csv, lambda p: finished_row(p, "h"), lambda p: append_row(p, row("a"))):
        with pytest.raises(UserError, match=f"^results_csv={path}: its lock {path}.lock is a directory; remove it$"):
            use(path)
    assert path.read_text() == HEADER


def test_a_lock_held_by_another_job_says_so(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    path.write_text(HEADER)
    monkeypatch.setattr(results, "LOCK_SECONDS", 0.1)
    with FileLock(f"{path}.lock"):  # held through another file descriptor, as another process would
        with pytest.raises(UserError, match=f"^results_csv={path}: another job has held its lock {path}.lock for "
                                            f"0.1 s; wait for it to finish, or delete {path}.lock if no job is running$"):
            check_results_csv(path)


def test_an_empty_table_has_no_finished_run_and_gets_a_header(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(b"")
    check_results_csv(path)
    assert finished_row(path, "h") is None
    append_row(path, row("a", accuracy=0.5))
    assert path.read_bytes() == b"run_id,config_hash,status,accuracy\r\na,h,ok,0.5\r\n"


@pytest.mark.parametrize("read", ["finished_row", "append_row"])
def test_the_table_is_read_under_its_lock(tmp_path, monkeypatch, read):
    """A reader without the lock could see half of a row another job is appending."""
    path = tmp_path / "results.csv"
    append_row(path, row("a"))
    lock_held = []
    real_read_table = results._read_table

    def read_table_checking_the_lock(table_path):
        other_job = FileLock(f"{table_path}.lock")  # another file descriptor, as another process would hold
        try:
            other_job.acquire(timeout=0)
        except Timeout:
            lock_held.append(True)
        else:
            other_job.release()
            lock_held.append(False)
        return real_read_table(table_path)

    monkeypatch.setattr(results, "_read_table", read_table_checking_the_lock)
    if read == "finished_row":
        assert finished_row(path, "h")["run_id"] == "a"
    else:
        append_row(path, row("b"))
    assert lock_held == [True]


DAMAGED = {  # records that are not rows of the table, as a crash or an edit leaves them
    "a row with an extra field": "x1,h,ok,0.1,surplus\r\n",
    "a row with a field too few": "x2,h,ok\r\n",
    "broken quoting": 'x3,h,"o"k,0.3\r\n',
}


def test_malformed_records_are_moved_aside_and_the_table_parses_again(tmp_path, capsys):
    path = tmp_path / "results.csv"
    torn = "x4,done,o"  # an append cut short: fields missing, no newline
    content = HEADER + DAMAGED["a row with an extra field"] + "a,done,ok,0.9\r\n" + "".join(list(DAMAGED.values())[1:]) + torn
    path.write_text(content, newline="")
    assert finished_row(path, "done")["run_id"] == "a"  # the extra field shifts no column, the torn row is no run
    append_row(path, row("b", accuracy=0.8))
    table = pd.read_csv(path, dtype=str)
    assert table.run_id.tolist() == ["a", "b"] and table.accuracy.tolist() == ["0.9", "0.8"]
    side = tmp_path / "results.csv.malformed"
    assert side.read_bytes().decode() == "".join(DAMAGED.values()) + torn + "\n"  # kept as they were
    warning = capsys.readouterr().err
    assert f"warning: {path} held 4 malformed record(s)" in warning and str(side) in warning
    append_row(path, row("c"))  # a clean table: appended, nothing more set aside
    assert side.read_bytes().decode() == "".join(DAMAGED.values()) + torn + "\n"
    assert len(pd.read_csv(path)) == 3


def test_an_unterminated_quote_at_the_end_is_no_traceback(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "a,done,ok,0.9\n" + 'b,done,ok,"0.8\n')
    assert finished_row(path, "done")["run_id"] == "a"
    append_row(path, row("c"))
    assert pd.read_csv(path).run_id.tolist() == ["a", "c"]
    assert (tmp_path / "results.csv.malformed").read_text() == 'b,done,ok,"0.8\n'


def test_an_append_that_fails_leaves_the_table_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "a,h,ok,0.9\r\n")
    before = path.read_bytes()
    real_write = os.write

    def disk_fills_up(fd, data):  # half the row fits, then the disk is full
        if len(data) > 4:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results.os, "write", disk_fills_up)
    with pytest.raises(UserError, match=f"cannot write results_csv={path} \\(No space left on device\\); the table is as it was"):
        append_row(path, row("b", accuracy=0.5))
    assert path.read_bytes() == before


def test_a_last_row_without_its_line_end_is_a_row(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "a,h,ok,0.9\n" + "b,done,ok,0.8")
    assert finished_row(path, "done")["run_id"] == "b"
    append_row(path, row("c", accuracy=0.7))
    assert pd.read_csv(path).run_id.tolist() == ["a", "b", "c"]
    assert not (tmp_path / "results.csv.malformed").exists()


def test_a_symlinked_results_csv_is_written_through_and_stays_a_link(tmp_path):
    target, link = tmp_path / "store" / "results.csv", tmp_path / "results.csv"
    target.parent.mkdir()
    link.symlink_to(target)
    check_results_csv(link)
    append_row(link, row("a"))
    append_row(link, row("b", accuracy=0.5))  # a new column: the table is rewritten
    assert link.is_symlink() and link.resolve() == target
    assert pd.read_csv(target).run_id.tolist() == ["a", "b"] and finished_row(link, "h")["run_id"] == "b"
    assert (target.parent / "results.csv.lock").exists()  # writers through the link and the target share it


def test_a_symlink_loop_is_refused(tmp_path):
    link = tmp_path / "results.csv"
    link.symlink_to(link)
    for use in (check_results_csv, lambda p: append_row(p, row("a")), lambda p: finished_row(p, "h")):
        with pytest.raises(UserError, match=f"^results_csv={link} is a symlink loop"):
            use(link)
    assert link.is_symlink()


def test_the_temporary_file_of_a_killed_rewrite_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER)
    killed = tmp_path / "results.csv.l2rw-4194304.tmp"  # what a rewrite killed before its rename leaves (no pid is that high)
    killed.write_text(HEADER + "half a row")
    others = [tmp_path / "results.csv.notes.tmp", tmp_path / "other.csv.l2rw-4194304.tmp"]
    for other in others:
        other.write_text("not ours")
    append_row(path, row("a"))
    assert not killed.exists() and all(other.exists() for other in others)
    assert pd.read_csv(path).run_id.tolist() == ["a"]


def append_rows(results: Path, writer: int, count: int) -> None:
    # Half the writers add a column, so appends race with rewrites to the union of columns.
    extra = {"extra": f"w{writer}"} if writer % 2 else {}
    for index in range(count):
        identity = {"run_id": f"{writer}-{index}", "config_hash": f"h{writer}", "status": "ok"}
        append_row(results, identity | {"writer": writer, "index": index, "text": "a, \"quoted\"\nvalue", **extra})


@pytest.mark.slow
def test_concurrent_appends_neither_interleave_nor_lose_rows(tmp_path):
    results = tmp_path / "results.csv"
    context = multiprocessing.get_context("fork")  # no re-import of torch in each writer
    writers = [context.Process(target=append_rows, args=(results, writer, 50)) for writer in range(8)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert len(rows) == 400
    assert sorted(zip(rows.writer.astype(int), rows["index"].astype(int))) == [(w, i) for w in range(8) for i in range(50)]
    assert set(rows.text) == {"a, \"quoted\"\nvalue"}
