"""The results CSV: one row per finished run, appended under a cross-process file lock."""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock

# Columns measured or assigned per run; every other column is a config choice (l2rw-report
# groups runs by those, seed aside).
OUTCOME_COLUMNS = (
    "run_id", "time", "config_hash", "run_dir", "status", "diverged_step", "train_size", "train_corrupted",
    "accuracy", "balanced_accuracy", "per_class_recall", "skipped_steps", "wall_seconds",
    "seconds_per_step", "warmup_seconds", "peak_memory_mb",
)


def append_row(path: str | Path, row: dict) -> None:
    """Append `row` under the file's own header (columns it lacks stay empty); a row with columns
    the file lacks rewrites the file with the union of both (atomically), so runs of different
    methods, and results from older and newer versions, stay in one table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        header = _header(path)
        if header is None or set(row) <= set(header):
            with open(path, "a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=header or list(row), restval="")
                if header is None:
                    writer.writeheader()
                writer.writerow(row)
                file.flush()
                os.fsync(file.fileno())
        else:
            # the new row as text, as csv.DictWriter writes it (None as an empty field): a number
            # column new to the file would otherwise become float next to the old rows' blanks
            new = pd.DataFrame([{key: "" if value is None else str(value) for key, value in row.items()}])
            table = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False), new])
            with atomic_path(path) as temporary:
                table.to_csv(temporary, index=False)


def finished_row(path: str | Path, config_hash: str) -> dict | None:
    """The last row of `path` with this `config_hash` and status `ok`, or None."""
    path = Path(path)
    if not path.exists():
        return None
    with FileLock(f"{path}.lock"):  # never read half of a row being appended
        table = pd.read_csv(path, dtype={"config_hash": str})
    if "config_hash" not in table:
        return None
    done = table[(table.config_hash == config_hash) & (table.status == "ok")]
    return None if done.empty else done.iloc[-1].to_dict()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write instead of `path`; afterwards it is fsynced and renamed over
    `path`, so a reader (or a crash) sees the old file or the whole new one, never a part.
    The temporary name carries the process id: concurrent writers never share one."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
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


def _header(path: Path) -> list[str] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as file:
        return next(csv.reader(file), None)
