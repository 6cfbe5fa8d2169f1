"""Versioned schema migrations of the DM server's database (Alembic, host/dm/server/migrations).

``upgrade(engine)`` runs at every Store start and is a no-op once the database is at head.
Several instances starting at once over one database migrate it once: the migration runs
under a lock (PostgreSQL: a transaction-scoped advisory lock; SQLite: flock on the
database file, which SQLite's own fcntl locks do not see), and whoever comes second finds
the database at head. A database made by a release before migrations has tables but no
``alembic_version``: it is stamped with the revision its columns match, then upgraded.

A change to host/dm/server/tables.py needs a revision beside it
(tests/test_dm_migrations.py fails when the migrated schema and the tables differ):

    .venv/bin/python -m host.dm.server.migrate revision "what changed" 0003   # autogenerate
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import zlib
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

SCRIPT_LOCATION = "host.dm.server:migrations"
_PG_LOCK_KEY = zlib.crc32(b"simvault-dm-migrate")  # any constant; the same in every instance


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config(None)).get_current_head()  # type: ignore[arg-type]


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _legacy_revision(conn: Connection) -> str:
    """The revision a database made before migrations matches, by its columns."""
    devices = {c["name"] for c in inspect(conn).get_columns("devices")}
    return "0002" if "enc_key" in devices else "0001"


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: flock on the database file, held until the migration's transaction committed."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield
        return
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def upgrade(engine: Engine) -> str:
    """Bring the database to head (see module doc); returns the revision now in force."""
    with _file_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # released when this transaction ends
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        rev = current(conn)
        if rev is None and inspect(conn).has_table("devices"):
            command.stamp(_config(conn), _legacy_revision(conn))
            rev = current(conn)
        if rev != head():
            command.upgrade(_config(conn), "head")
        return current(conn) or ""


def _revision(message: str, rev_id: str) -> None:
    """Autogenerate a revision: the difference between the tables and a database at head."""
    import tempfile

    from sqlalchemy import create_engine
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/head.db")
        upgrade(engine)
        with engine.begin() as conn:
            command.revision(_config(conn), message=message, autogenerate=True, rev_id=rev_id)
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "revision":
        sys.exit('usage: python -m host.dm.server.migrate revision "message" REV_ID')
    _revision(sys.argv[2], sys.argv[3])
