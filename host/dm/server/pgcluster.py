"""A throwaway PostgreSQL cluster on loopback (tests and the benchmark).

    with TempPostgres() as pg:
        store = Store(pg.url)          # postgresql+psycopg://postgres@127.0.0.1:PORT/simvault

Uses Debian's binaries (/usr/lib/postgresql/<ver>/bin: initdb, pg_ctl). The
server refuses to run as root, so as root the cluster belongs to the
``postgres`` system user (commands run through runuser); otherwise to the
current user. Trust authentication, loopback TCP only, a private socket
directory, fsync off (it is thrown away).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from host.errors import SimvaultError


class PostgresUnavailable(SimvaultError):
    """No PostgreSQL server binaries here: install Debian's postgresql package."""


def find_bin_dir() -> Path:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    raise PostgresUnavailable("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    def __init__(self, database: str = "simvault") -> None:
        self.bin = find_bin_dir()
        self.database = database
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="simvault-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else None

    @property
    def url(self) -> str:
        user = self.user or os.environ.get("USER", "postgres")
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-400:]}")

    def start(self) -> "TempPostgres":
        self.sock.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", self.user or os.environ.get("USER", "postgres"),
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-w", "-t", "60",
                  "-l", self.root / "log", "start")
        self._run(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", self.user or os.environ.get("USER", "postgres"), self.database)
        return self

    def stop(self) -> None:
        try:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """Drop and recreate the database (a clean slate between tests)."""
        user = self.user or os.environ.get("USER", "postgres")
        self._run(self.bin / "dropdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "--force",
                  self.database)
        self._run(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, self.database)

    def __enter__(self) -> "TempPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
