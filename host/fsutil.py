"""Small file-system helpers shared by the host packages."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all-or-nothing: a temp file beside it, fsync,
    chmod ``mode``, os.replace. A crash leaves the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite_file(database: str | None, what: str = "database",
                        error: type[Exception] = PermissionError) -> None:
    """Make a SQLite database file private before SQLite opens it: create it 0600 when new
    (SQLite gives its -wal/-shm/-journal files the database's mode), and refuse one that
    others can read, since it holds every device's credential digests. ``database`` is the
    path of a sqlite URL (None or ':memory:' for an in-memory one: nothing to do).

    Raises ``error`` with the chmod that fixes it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        return
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES)):
        try:
            mode = candidate.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            raise error(
                f"{what} file {candidate} is readable by others (mode {mode:04o}) and holds credential "
                f"digests: run `chmod 600 {path}{'*' if candidate != path else ''}` (its -wal/-shm too), then start again")
