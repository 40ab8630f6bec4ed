"""The results CSV: one row per finished run, appended under a cross-process file lock.

A row, once written, is never garbled or lost: a file that is not a results table is refused and
left as it was; records that do not parse as rows of the table (a wrong number of fields, broken
quoting, a last line cut short by a crash) are moved to `<results>.malformed` before the next row
is added, so the table always parses; a last row that only lacks its line end is a row. An append
that fails (a full disk) leaves the table as it was. A results_csv that is a symlink is written
through: the link stays.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from l2rw.errors import UserError
from l2rw.file_io import atomic_path, remove_killed_temporaries

# Every table this tool writes has these columns; a file without them is not one of its tables.
IDENTITY_COLUMNS = ("run_id", "config_hash", "status")
# A results header is a few hundred bytes: reading no further bounds the look at any file.
HEADER_BYTES = 1 << 16
# How long the check before training waits for another job's append before it gives up.
LOCK_SECONDS = 30
# Any byte survives a read and a write: a row cut inside a multi-byte character is moved, not mangled.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}
NEWLINES = ("\n", "\r")


@dataclass
class Table:
    header: list[str]
    rows: list[dict[str, str]]  # the well-formed rows, as text
    malformed: list[str]        # every other record, as it is in the file
    ends_with_newline: bool     # false: the last record lacks its line end, so a plain append would join it


def results_path(results_csv: str | Path) -> Path:
    """`results_csv` as every reader and writer takes it: `~` expanded, relative to the folder the
    command started in. A symlink stays one: the table follows it itself (`_table_path`). A path
    that pathlib cannot expand, resolve or even look at is refused here, before any caller tries."""
    try:
        path = Path(results_csv).expanduser()
    except RuntimeError:  # ~name of no user
        raise UserError(f"results_csv={results_csv}: cannot expand its ~ (no such user); give the folder in full") from None
    _table_path(path)
    return path


def check_results_csv(results_csv: str | Path) -> None:
    """Refuse, before training, a results_csv the run's row could not be appended to: a folder, a
    path whose folder cannot be made, anything but a regular file, a file that cannot be written
    or locked, one that is not an l2rw results table (or whose header repeats a column), a path too
    long to make, and a `<results>.malformed` that is not a regular file."""
    results_csv = _table_path(results_csv)
    if results_csv.is_dir():
        raise UserError(f"results_csv={results_csv} is a directory; give a file path, e.g. {results_csv / 'results.csv'}")
    try:
        results_csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"results_csv={results_csv}: cannot create its folder ({error.strerror}); choose another path") from None
    if results_csv.exists() and not os.access(results_csv, os.W_OK) or not os.access(results_csv.parent, os.W_OK):
        raise UserError(f"results_csv={results_csv} is not writable; choose another path")
    _check_side_file(results_csv)
    with _locked(results_csv, timeout=LOCK_SECONDS):
        pass  # locking is the check: it refuses a file that is not a table, and a lock it cannot take


def append_row(path: str | Path, row: dict) -> None:
    """Append `row` under the file's own header (columns it lacks stay empty); a row with columns
    the file lacks rewrites the file with the union of both (atomically), so runs of different
    methods, and results from older and newer versions, stay in one table. A table holding
    malformed records is rewritten too, without them (they go to `<path>.malformed`)."""
    path = _table_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        remove_killed_temporaries(path)  # of rewrites killed before their rename
        table = _read_table(path)
        try:
            if table is not None and not table.malformed and table.ends_with_newline and set(row) <= set(table.header):
                _append(path, _csv_text(table.header, [row]))
            else:
                _rewrite(path, table, row)
        except OSError as error:
            raise UserError(
                f"cannot write results_csv={path} ({_reason(error)}); the table is as it was: "
                "make room (or choose another results_csv) and rerun the same command"
            ) from None


def finished_row(path: str | Path, config_hash: str) -> dict[str, str] | None:
    """The last well-formed row of `path` with this `config_hash` and status `ok` (as text), or None."""
    path = _table_path(path)
    if not path.exists():
        return None
    with _locked(path):  # never read half of a row being appended
        table = _read_table(path)
    done = [row for row in (table.rows if table else []) if row["config_hash"] == config_hash and row["status"] == "ok"]
    return done[-1] if done else None


def _table_path(results_csv: str | Path) -> Path:
    """`results_csv`, or the file its symlink points to: a rewrite replaces the file it writes, which
    must be the target, not the link; and writers through the link and the target share one lock."""
    _refuse_too_long(results_csv)
    path = Path(results_csv)
    if not path.is_symlink():
        return path
    try:
        target = path.resolve()
    except RuntimeError:  # a symlink loop, before Python 3.13
        target = path
    if target.is_symlink():  # a loop (from Python 3.13 on, resolve returns one of its links)
        raise UserError(f"results_csv={path} is a symlink loop; remove it, or point it at a file")
    return target


def _refuse_too_long(results_csv: str | Path) -> None:
    """Such a path cannot be made, and looking at it (`is_symlink`, `exists`) raises."""
    if len(str(results_csv)) >= 4096 or any(len(part.encode()) > 255 for part in Path(results_csv).parts):
        raise UserError(f"results_csv={str(results_csv)[:60]}...: the path is too long (at most 255 bytes a name, "
                        "4,095 in all); choose a shorter one")


@contextmanager
def _locked(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold the cross-process lock of the table at `path` (timeout in seconds; -1: wait as long as
    it takes). The table must be a results table in a regular file, or not exist yet: anything
    else is refused before its lock file is made beside it, and a device or a pipe is never
    locked, read or written. (The header can be read unlocked: tables are only created whole.)"""
    if path.exists() and not path.is_file():
        raise UserError(f"results_csv={path} is not a regular file; give the path of a file (it is created if missing)")
    _read_header(path)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise UserError(
            f"results_csv={path}: another job has held its lock {lock.lock_file} for {timeout:g} s; wait for it to "
            f"finish, or delete {lock.lock_file} if no job is running"
        ) from None
    except IsADirectoryError:
        raise UserError(f"results_csv={path}: its lock {lock.lock_file} is a directory; remove it") from None
    except OSError as error:
        raise UserError(
            f"results_csv={path}: cannot lock {lock.lock_file} ({_reason(error)}); choose a path on a local file system"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _read_header(path: Path) -> list[str] | None:
    """The header of the results table at `path`; None when there is no table yet (no file, or
    an empty one). Any other file is refused, after reading at most HEADER_BYTES of it."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as file:
            start = file.read(HEADER_BYTES)
    except OSError as error:
        raise UserError(f"results_csv={path} cannot be read ({_reason(error)}); fix its permissions or choose another path") from None
    if not start:
        return None
    try:
        header = next(csv.reader([start.split(b"\n", 1)[0].decode("utf-8-sig")], strict=True), [])
    except (UnicodeDecodeError, csv.Error):  # binary, or not CSV
        header = []
    if not set(IDENTITY_COLUMNS) <= set(header):
        raise UserError(
            f"results_csv={path} is not an l2rw results table (its first line does not name the columns "
            f"{', '.join(IDENTITY_COLUMNS)}); give another path, or move that file away"
        )
    repeated = next((column for index, column in enumerate(header) if column in header[:index]), None)
    if repeated is not None:  # a row keeps one value per column name: rewriting it would drop the other
        raise UserError(
            f"results_csv={path}: its header names the column {repeated!r} more than once (an edit?); "
            "rename or remove one of them, then rerun"
        )
    return header


def _read_table(path: Path) -> Table | None:
    """The table at `path` (None: no table yet), its records sorted into rows and malformed ones."""
    header = _read_header(path)
    if header is None:
        return None
    with open(path, newline="", **TEXT) as file:
        text = file.read()
    records = _records(io.StringIO(text, newline=""))
    next(records)  # the header, read above
    rows, malformed = [], []
    for fields, raw in records:
        if fields == []:  # a blank line holds no row
            continue
        # a last record without its line end is a row when its fields are all there (one cut short
        # by a crash mostly lacks some); only the last record can lack one
        if fields is None or len(fields) != len(header):
            malformed.append(raw)
        else:
            rows.append(dict(zip(header, fields)))
    return Table(header, rows, malformed, text.endswith(NEWLINES))


def _records(lines: Iterable[str]) -> Iterator[tuple[list[str] | None, str]]:
    """Each CSV record of `lines` with its text as it is in the file (a quoted field may span
    lines); None instead of the fields for text that is not a well-formed record."""
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in lines:
            consumed.append(line)
            yield line

    reader = csv.reader(feed(), strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:  # broken quoting; the reader goes on at the next line
            fields = None
        yield fields, "".join(consumed)
        consumed.clear()


def _csv_text(header: list[str], rows: list[dict], with_header: bool = False) -> str:
    """`rows` as csv.DictWriter writes them under `header` (missing columns and None: empty)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, restval="")
    if with_header:
        writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _append(path: Path, text: str) -> None:
    """Add `text` at the end of `path`, durably; on failure the file is cut back to where it was,
    so a full disk never leaves half a row."""
    data = text.encode(**TEXT)
    file = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(file).st_size
        try:
            while data:
                data = data[os.write(file, data):]
            os.fsync(file)
        except OSError:
            os.ftruncate(file, size)
            raise
    finally:
        os.close(file)


def _rewrite(path: Path, table: Table | None, row: dict) -> None:
    """The table anew, atomically: its well-formed rows and `row` under the union of their columns.
    Its malformed records are kept in the side file first, so not even a crash loses them."""
    header = [] if table is None else table.header
    header = header + [key for key in row if key not in header]
    if table is not None and table.malformed:
        _set_aside(path, table.malformed)
    text = _csv_text(header, ([] if table is None else table.rows) + [row], with_header=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text, newline="", **TEXT)


def _side_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.malformed")


def _check_side_file(path: Path) -> None:
    """Refuse a `<table>.malformed` that the table's malformed records cannot be appended to safely:
    through a symlink they would land in another file; a pipe or device would block or swallow them."""
    side = _side_file(path)
    try:
        mode = side.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UserError(
            f"results_csv={path}: {side}, where malformed records of the table are kept, is not a regular file "
            "(a symlink, directory, device or pipe); move it away"
        )


def _set_aside(path: Path, records: list[str]) -> None:
    _check_side_file(path)
    side = _side_file(path)
    # and should it be swapped for a link or a pipe after the check: refused, never followed, never blocked on
    descriptor = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    with open(descriptor, "a", newline="", **TEXT) as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, f"{side} is not a regular file")
        file.writelines(record if record.endswith(NEWLINES) else record + "\n" for record in records)
        file.flush()
        os.fsync(file.fileno())
    print(
        f"warning: {path} held {len(records)} malformed record(s) (a wrong number of fields, broken quoting "
        f"or a last line cut short); moved them, as they were, to {side}",
        file=sys.stderr,
    )


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
