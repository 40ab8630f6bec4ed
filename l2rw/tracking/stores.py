"""The databases the MLflow logger and the Optuna sweeper keep their records in
(`logger.mlflow.tracking_uri`, `hydra.sweeper.storage`), checked before either store opens one.

Opening a database makes the store's tables in it, and a store that cannot open one fails deep
inside SQLAlchemy (MLflow retries for minutes first). So a URL is refused, in one line, when its
database could not be opened, or when it holds tables of any other kind: a file of the user's,
the results table, the other store's database stay as they were.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection
from contextlib import closing
from pathlib import Path

from l2rw.errors import UserError

# SQLite's own tables, and Alembic's record of the schema's version (every store has one)
BOOKKEEPING_PREFIXES = ("sqlite_", "alembic_")
# How long a read of the table names waits for a job that is writing the database
LOCK_SECONDS = 30


def sqlite_file(url: str) -> Path | None:
    """The file an SQLAlchemy URL of SQLite names (sqlite:///relative, sqlite:////absolute); None
    for another database, or no file (in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def prepare_database(key: str, url: str, store: str, own_tables: Collection[str]) -> None:
    """Refuse the database URL `url` (option `key`) unless `store` ("MLflow", "Optuna") can open it
    and it holds no table but `own_tables`. A new SQLite file is made here, empty, with its folder:
    a place where no file can be made is refused before the store tries."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise UserError(f"{key}={url} is not a database URL; use e.g. sqlite:///outputs/{store.lower()}.db") from None
    if backend != "sqlite":
        check_driver(key, url)
    elif (path := sqlite_file(url)) is None:
        raise UserError(f"{key}={url} names no database file, so nothing would be kept; use e.g. sqlite:///outputs/{store.lower()}.db")
    elif path.exists():
        check_tables(key, url, path, store, own_tables)
    else:
        make_empty_database(key, url, path)


def check_driver(key: str, url: str) -> None:
    """A server's database (postgresql://, mysql://) needs its driver package; building an engine
    imports it without connecting."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        sqlalchemy.create_engine(url).dispose()
    except NoSuchModuleError:
        raise UserError(f"{key}={url}: SQLAlchemy knows no database of this kind; use e.g. sqlite:///path/to/file.db "
                        "or postgresql://user@host/db") from None
    except ImportError as error:
        raise UserError(f"{key}={url}: its database driver is not installed ({error}); install it, or use "
                        "sqlite:///path/to/file.db") from None
    except ArgumentError as error:
        raise UserError(f"{key}={url} is not a database URL ({error}); use e.g. sqlite:///path/to/file.db") from None


def check_tables(key: str, url: str, path: Path, store: str, own_tables: Collection[str]) -> None:
    """An existing file must be an SQLite database, read without changing it, with no table but the store's."""
    if not path.is_file():
        raise UserError(f"{key}={url}: {path} is not a regular file (a directory, device or pipe); give the path of "
                        "a database file (it is created if missing)")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_SECONDS)) as database:
            tables = [name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as error:
        raise UserError(f"{key}={url}: {path} is not an SQLite database ({error}); give a database file of {store}'s, "
                        "or a new path") from None
    foreign = sorted(name for name in tables if name not in own_tables and not name.startswith(BOOKKEEPING_PREFIXES))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"{key}={url}: {path} holds tables that are not {store}'s ({shown}); {store} would add its own "
                        f"to it: give a database file of {store}'s, or a new path")


def make_empty_database(key: str, url: str, path: Path) -> None:
    """The folder and an empty file, which SQLite takes for an empty database (made without
    truncating: another job may have made it meanwhile)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
    except FileExistsError:  # mkdir met a file where a folder of the path should be
        raise UserError(f"{key}={url}: cannot create {path} (a folder of its path is a file); choose another path") from None
    except OSError as error:
        raise UserError(f"{key}={url}: cannot create {path} ({error.strerror}); choose another path") from None
