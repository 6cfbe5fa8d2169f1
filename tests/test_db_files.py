"""The servers' SQLite files hold credential digests: created 0600 (with their -wal/-shm), and a
database file others can read is refused at start with the chmod that fixes it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.dm.server.db import Store, StoreError
from host.ds.errors import DsError
from host.ds.store import DsStore

ROOT = Path(__file__).resolve().parent.parent


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}


def test_dm_database_and_its_wal_are_private(tmp_path) -> None:
    os.umask(0o022)
    store = Store(f"sqlite:///{tmp_path}/dm.db")
    try:
        store.audit("test.write", None, "forces the -wal and -shm files into being")
        modes = _modes(tmp_path)
        assert {"dm.db", "dm.db-wal", "dm.db-shm"} <= set(modes), modes
        assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    finally:
        store.close()


def test_dm_database_readable_by_others_is_refused(tmp_path) -> None:
    db = tmp_path / "dm.db"
    Store(f"sqlite:///{db}").close()
    db.chmod(0o644)
    with pytest.raises(StoreError, match=r"readable by others \(mode 0644\).*chmod 600"):
        Store(f"sqlite:///{db}")
    db.chmod(0o600)
    wal = tmp_path / "dm.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o640)
    with pytest.raises(StoreError, match="dm.db-wal is readable by others"):
        Store(f"sqlite:///{db}")
    wal.chmod(0o600)
    Store(f"sqlite:///{db}").close()  # fixed as the message says: it opens


def test_ds_database_is_private_too(tmp_path) -> None:
    os.umask(0o022)
    store = DsStore(f"sqlite:///{tmp_path}/ds.db")
    store.add_user("alice", "a-long-password")
    assert (tmp_path / "ds.db").stat().st_mode & 0o777 == 0o600
    store.close()
    (tmp_path / "ds.db").chmod(0o604)
    with pytest.raises(DsError, match="readable by others"):
        DsStore(f"sqlite:///{tmp_path}/ds.db")


def test_dm_server_refuses_to_start_on_a_readable_file(tmp_path) -> None:
    db = tmp_path / "dm.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIMVAULT_DM_ADMIN_TOKEN="t" * 16)
    result = subprocess.run([sys.executable, "-m", "host.cli.dm", "dm", "server", "--listen", "127.0.0.1:0",
                             "--db", f"sqlite:///{db}"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode != 0
    assert f"chmod 600 {db}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
