"""Writing files so that a reader, or a crash, never sees half of one, a CSV field never spills
into the next, and a file of the user's is never overwritten or deleted (only the files this tool
wrote are replaced)."""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from l2rw.errors import UserError

# Only this tool names a file so: a user's `results.csv.2024.tmp` is never taken for a temporary.
TEMPORARY_MARKER = "l2rw"
# In a folder the tool writes outputs into: each output's name and the SHA-256 of what it last
# wrote there. A file whose content differs is the user's (or was edited since): it is kept.
WRITTEN = ".l2rw-written.json"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write instead of `path`; afterwards it is fsynced and renamed over
    `path`, so a reader (or a crash) sees the old file or the whole new one, never a part.
    The temporary name carries the process id: concurrent writers never share one, and
    `remove_killed_temporaries` knows the writer of one that is left behind."""
    temporary = path.with_name(f"{path.name}.{TEMPORARY_MARKER}-{os.getpid()}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_killed_temporaries(path: Path) -> None:
    """Delete the temporaries that `atomic_path(path)` left behind when its process was killed:
    files named as only it names them, whose process no longer runs. A live writer's temporary
    stays, and so does any other file beside `path`, whatever its name."""
    pattern = re.compile(rf"{re.escape(path.name)}\.{TEMPORARY_MARKER}-(\d+)\.tmp")
    for leftover in path.parent.glob(f"{glob.escape(path.name)}.{TEMPORARY_MARKER}-*.tmp"):
        named = pattern.fullmatch(leftover.name)
        if named and not _is_running(int(named.group(1))):
            leftover.unlink(missing_ok=True)


def _is_running(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (one of another user's counts: it may be the writer)."""
    if pid == os.getpid():
        return True  # this process may be writing it now, from another thread
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # no process has such a number
        return False
    return True


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """A CSV table through the csv module, which quotes a field holding a comma, a quote or a line
    break (a class name, which is a folder's name, may hold any), so every row keeps its columns."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def check_replaceable(path: Path, label: str, what: str) -> None:
    """Refuse `path` unless writing it loses nothing: absent, or a regular file holding exactly
    what this tool last wrote there. Nothing is opened but a regular file, so a pipe never blocks.
    `label` names the path in the message as the user gave it (e.g. `--out x.csv`), `what` says
    what the tool writes (e.g. `a table l2rw-select wrote`)."""
    if path.name == WRITTEN:
        raise UserError(f"{label}: {WRITTEN} is where this tool records the files it wrote; choose another name")
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (the folder's own check names a file in its way)
        return
    if not stat.S_ISREG(mode):
        raise UserError(f"{label} is not a regular file (a directory, device, pipe or symlink); choose another path")
    if not _holds_what_was_written(path):
        raise UserError(f"{label} exists and is not {what} (or was changed since); choose another path, or delete it")


def write_replacing(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and record it as this tool's, so that a rerun may replace
    it (`check_replaceable` first: this replaces whatever is there)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    _record(path, hashlib.sha256(data).hexdigest())


def remove_written(path: Path) -> None:
    """Delete `path`, a file `check_replaceable` let pass, and forget it."""
    path.unlink(missing_ok=True)
    _record(path, None)


def _holds_what_was_written(path: Path) -> bool:
    recorded = _written(path.parent).get(path.name)
    if recorded is None:  # never read a file that cannot be the tool's
        return False
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # unreadable: not one this tool can vouch for
        return False
    return digest.hexdigest() == recorded


def _written(folder: Path) -> dict[str, str]:
    """What this tool last wrote into `folder`, by name; nothing when the record is missing or not
    one of its own (then no file there is taken for the tool's)."""
    record = folder / WRITTEN
    try:
        if not stat.S_ISREG(record.lstat().st_mode):
            return {}
        written = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(written, dict):
        return {}
    return {name: digest for name, digest in written.items() if isinstance(digest, str)}


def _record(path: Path, digest: str | None) -> None:
    """Note `digest` as what this tool wrote at `path` (None: it wrote nothing there)."""
    before = _written(path.parent)
    written = {name: recorded for name, recorded in before.items() if name != path.name}
    if digest is not None:
        written[path.name] = digest
    if written == before:  # a plot skipped again: its folder is left as it was
        return
    with atomic_path(path.parent / WRITTEN) as temporary:
        temporary.write_text(json.dumps(written, indent=1, sort_keys=True) + "\n", encoding="utf-8")
